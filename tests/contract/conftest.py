"""The `repository` fixture: one contract suite, run against every store implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from payments_service.storage import InMemoryPaymentRepository, PaymentRepository
from payments_service.storage.postgres import PostgresPaymentRepository
from tests.support.postgres import fresh_database

RepositoryFactory = Callable[[], Awaitable[PaymentRepository]]


async def _memory() -> AsyncIterator[RepositoryFactory]:
    async def make() -> PaymentRepository:
        return InMemoryPaymentRepository()

    yield make


async def _postgres() -> AsyncIterator[RepositoryFactory]:
    # A database of its own per test, migrated, dropped afterwards (see tests/support/postgres.py).
    with fresh_database() as url:

        async def make() -> PaymentRepository:
            return await PostgresPaymentRepository.open(
                url, min_size=1, max_size=16, timeout_seconds=5
            )

        yield make


#: Implementation name -> an async generator yielding a factory of empty repositories.
IMPLEMENTATIONS: dict[str, Callable[[], AsyncIterator[RepositoryFactory]]] = {
    "memory": _memory,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def repository_factory(
    request: pytest.FixtureRequest,
) -> AsyncIterator[RepositoryFactory]:
    """Makes empty repositories of one implementation; each is closed after the test."""
    made: list[PaymentRepository] = []
    implementation = IMPLEMENTATIONS[request.param]()
    factory = await anext(implementation)

    async def make() -> PaymentRepository:
        repository = await factory()
        made.append(repository)
        return repository

    yield make
    for repository in made:
        await repository.close()
    await implementation.aclose()


@pytest.fixture
async def repository(repository_factory: RepositoryFactory) -> PaymentRepository:
    """An empty repository of the implementation under test."""
    return await repository_factory()
