"""Server credentials for TLS and mutual TLS, read from the PEM files named in Settings."""

from __future__ import annotations

import logging

import grpc

from payments_service.config import Settings

logger = logging.getLogger(__name__)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None when TLS is off.

    With TLS_CLIENT_CA_FILE, clients must present a certificate signed by that CA.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    certificate_chain = settings.tls_cert_file.read_bytes()
    private_key = settings.tls_key_file.read_bytes()
    root_certificates = None
    if settings.tls_client_ca_file is not None:
        root_certificates = settings.tls_client_ca_file.read_bytes()
    logger.info(
        "TLS on (certificate %s, client certificates %s)",
        settings.tls_cert_file,
        "required" if root_certificates else "not requested",
    )
    return grpc.ssl_server_credentials(
        [(private_key, certificate_chain)],
        root_certificates=root_certificates,
        require_client_auth=root_certificates is not None,
    )
