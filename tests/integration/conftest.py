"""Integration fixtures: a throw-away PostgreSQL database per test (see postgres_support)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
