"""The `repository` fixture: one contract suite, run against every store implementation."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from payments_service.storage import InMemoryPaymentRepository, PaymentRepository
from payments_service.storage.postgres import PostgresPaymentRepository
from tests.postgres_support import fresh_database

RepositoryFactory = Callable[[], PaymentRepository]


def _memory() -> Iterator[RepositoryFactory]:
    yield InMemoryPaymentRepository


def _postgres() -> Iterator[RepositoryFactory]:
    # A database of its own per test, migrated, dropped afterwards (see postgres_support).
    with fresh_database() as url:
        yield lambda: PostgresPaymentRepository(url, min_size=1, max_size=16, timeout_seconds=5)


#: Implementation name -> a generator yielding a factory of empty repositories.
IMPLEMENTATIONS: dict[str, Callable[[], Iterator[RepositoryFactory]]] = {
    "memory": _memory,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def repository_factory(request: pytest.FixtureRequest) -> Iterator[RepositoryFactory]:
    """Makes empty repositories of one implementation; each is closed after the test."""
    made: list[PaymentRepository] = []

    def make() -> PaymentRepository:
        repository = factory()
        made.append(repository)
        return repository

    implementation = IMPLEMENTATIONS[request.param]()
    factory = next(implementation)
    yield make
    for repository in made:
        repository.close()
    implementation.close()


@pytest.fixture
def repository(repository_factory: RepositoryFactory) -> PaymentRepository:
    """An empty repository of the implementation under test."""
    return repository_factory()
