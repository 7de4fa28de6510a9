"""Server credentials for TLS and mutual TLS, read from the PEM files named in Settings.

The files are read again when they change: cert-manager renews a certificate in its Secret,
the kubelet swaps the mounted files, and the next connection is served with the new one,
with no restart. gRPC asks :class:`CertificateFiles` at each new TLS handshake; it looks at
the files' modification times at most once a second, and a renewal caught half-written (a
key that does not match its certificate) is skipped until it is whole.
"""

from __future__ import annotations

import logging
import ssl
import time
from pathlib import Path

import grpc

from payments_service.config import Settings, certificate_problem

logger = logging.getLogger(__name__)

#: How often a handshake may look at the files' modification times.
RECHECK_SECONDS = 1.0


class CertificateFiles:
    """The certificate chain, key and client CA bundle, as of their last whole version."""

    def __init__(self, certificate: Path, key: Path, client_ca: Path | None) -> None:
        self._paths = (certificate, key, client_ca)
        self._checked = 0.0
        self._seen = self._stamps()
        self.configuration = self._read()

    def _stamps(self) -> tuple[int, ...]:
        return tuple(p.stat().st_mtime_ns if p is not None else 0 for p in self._paths)

    def _read(self) -> grpc.ServerCertificateConfiguration:
        certificate, key, client_ca = self._paths
        return grpc.ssl_server_certificate_configuration(
            [(key.read_bytes(), certificate.read_bytes())],
            root_certificates=client_ca.read_bytes() if client_ca is not None else None,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's certificate_configuration_fetcher: a new configuration, or None to keep
        the current one. Runs on one of gRPC's threads at each new handshake."""
        now = time.monotonic()
        if now - self._checked < RECHECK_SECONDS:
            return None
        self._checked = now
        try:
            stamps = self._stamps()
            if stamps == self._seen:
                return None
            certificate, key, client_ca = self._paths
            problem = certificate_problem(certificate, key)
            if problem is not None:
                raise ValueError(problem)
            if client_ca is not None:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=client_ca)
            configuration = self._read()
        except (OSError, ValueError, ssl.SSLError) as error:
            logger.warning("TLS files changed but cannot be used yet (%s); keeping the old", error)
            return None
        self._seen = stamps
        self.configuration = configuration
        logger.info("TLS certificate reloaded from %s", certificate)
        return configuration


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None when TLS is off.

    With TLS_CLIENT_CA_FILE, clients must present a certificate signed by that CA.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    files = CertificateFiles(
        settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    )
    mutual = settings.tls_client_ca_file is not None
    logger.info(
        "TLS on (certificate %s, client certificates %s, reloaded when the files change)",
        settings.tls_cert_file,
        "required" if mutual else "not requested",
    )
    return grpc.dynamic_ssl_server_credentials(
        # grpc-stubs says the fetcher may not answer None; grpc itself says it may.
        files.configuration,
        files.fetch,  # type: ignore[arg-type]
        require_client_authentication=mutual,
    )
