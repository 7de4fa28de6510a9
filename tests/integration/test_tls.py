"""TLS and mutual TLS on the gRPC port, and the plaintext health-only port for probes."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments_service.payments_pb2_grpc import PaymentServiceStub
from payments_service.transport.tls import RECHECK_SECONDS
from tests.support.certificates import CertificateAuthority, Issued
from tests.support.network import free_port
from tests.support.requests import valid_request
from tests.support.servers import RunningServer, ServerFactory, start_tls_server

SERVING = health_pb2.HealthCheckResponse.SERVING


def _call_over_tls(
    app: RunningServer, authority: CertificateAuthority, client: Issued | None = None
) -> str:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=authority.pem,
        private_key=client.key if client else None,
        certificate_chain=client.certificate if client else None,
    )
    with grpc.secure_channel(f"127.0.0.1:{app.port}", credentials) as channel:
        return str(PaymentServiceStub(channel).RequestPayment(valid_request(), timeout=5).message)


def _call_in_plaintext(app: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        PaymentServiceStub(channel).RequestPayment(valid_request(), timeout=5)


def test_a_tls_client_is_served_and_a_plaintext_client_is_not(
    server_factory: ServerFactory, authority: CertificateAuthority, server_certificate: Issued
) -> None:
    app = start_tls_server(server_factory, server_certificate)

    assert _call_over_tls(app, authority) == "Payment created"
    with pytest.raises(grpc.RpcError) as plaintext:
        _call_in_plaintext(app)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    assert app.count() == 1


def test_a_client_that_does_not_trust_the_server_certificate_is_refused(
    server_factory: ServerFactory, tmp_path: Path, server_certificate: Issued
) -> None:
    app = start_tls_server(server_factory, server_certificate)
    stranger = CertificateAuthority(tmp_path, name="other-ca")

    with pytest.raises(grpc.RpcError) as refused:
        _call_over_tls(app, stranger)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(
    server_factory: ServerFactory,
    tmp_path: Path,
    authority: CertificateAuthority,
    server_certificate: Issued,
) -> None:
    app = start_tls_server(server_factory, server_certificate, tls_client_ca_file=authority.file)
    trusted_client = authority.issue("payments-client", server=False)
    foreign_client = CertificateAuthority(tmp_path, name="rogue-ca").issue("rogue", server=False)

    assert _call_over_tls(app, authority, trusted_client) == "Payment created"
    for client in (None, foreign_client):
        with pytest.raises(grpc.RpcError) as refused:
            _call_over_tls(app, authority, client)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert app.count() == 1


def test_probes_pass_on_the_plaintext_health_port_which_serves_nothing_else(
    server_factory: ServerFactory, server_certificate: Issued
) -> None:
    app = start_tls_server(server_factory, server_certificate, health_port=free_port())
    assert app.health_port is not None

    with grpc.insecure_channel(f"127.0.0.1:{app.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "payments.v1.PaymentService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == SERVING
        with pytest.raises(grpc.RpcError) as not_here:
            PaymentServiceStub(channel).RequestPayment(valid_request(), timeout=5)
        assert not_here.value.code() == grpc.StatusCode.UNIMPLEMENTED

        app.enter_graceful_shutdown()  # what stop() does first on SIGTERM
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert app.count() == 0


def _served_certificate(port: int) -> bytes:
    """The certificate a new TLS connection to ``port`` is shown (as PEM)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])  # gRPC refuses a TLS client without ALPN h2
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der).encode()


def _same_certificate(a: bytes, b: bytes) -> bool:
    return x509.load_pem_x509_certificate(a) == x509.load_pem_x509_certificate(b)


def test_a_renewed_certificate_is_served_without_a_restart(
    server_factory: ServerFactory, authority: CertificateAuthority, server_certificate: Issued
) -> None:
    """cert-manager renews the Secret, the kubelet swaps the files: the next connection is
    served with the new certificate; a renewal caught half-written is not used."""
    app = start_tls_server(server_factory, server_certificate)
    assert _same_certificate(_served_certificate(app.port), server_certificate.certificate)
    renewed = authority.issue("payments-server-renewed", server=True)
    # Half-written: the new certificate is there, its key not yet.
    server_certificate.certificate_file.write_bytes(renewed.certificate)
    time.sleep(RECHECK_SECONDS + 0.2)
    assert _same_certificate(_served_certificate(app.port), server_certificate.certificate)
    assert _call_over_tls(app, authority) == "Payment created"
    server_certificate.key_file.write_bytes(renewed.key)
    time.sleep(RECHECK_SECONDS + 0.2)
    assert _same_certificate(_served_certificate(app.port), renewed.certificate)
    assert _call_over_tls(app, authority) == "Payment created"
