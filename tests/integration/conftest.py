"""Integration fixtures: a throw-away PostgreSQL database per test (see tests/support/postgres.py),
and a test certificate authority with a TLS server certificate from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certificates import CertificateAuthority, Issued
from tests.support.postgres import fresh_database


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
