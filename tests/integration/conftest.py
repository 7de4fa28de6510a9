"""Integration fixtures: a throw-away PostgreSQL database per test (see postgres_support),
and a test certificate authority with a TLS server certificate from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningServer, ServerFactory, free_port, make_settings
from tests.integration.certificates import CertificateAuthority, Issued
from tests.postgres_support import fresh_database


@pytest.fixture
def database_url() -> Iterator[str]:
    """A new database with the service's schema, dropped after the test."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new database without any schema, dropped after the test."""
    with fresh_database(migrate=False) as url:
        yield url


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


@pytest.fixture
def server_certificate(authority: CertificateAuthority) -> Issued:
    """A server certificate for localhost and 127.0.0.1."""
    return authority.issue("payments-server", server=True)


def start_tls_server(
    server_factory: ServerFactory, certificate: Issued, **overrides: Any
) -> RunningServer:
    """A server whose API port speaks TLS with ``certificate`` (``tls_client_ca_file``
    among ``overrides`` makes it mutual TLS)."""
    settings = make_settings(
        port=free_port(),
        tls_cert_file=certificate.certificate_file,
        tls_key_file=certificate.key_file,
        **overrides,
    )
    return server_factory(settings)
