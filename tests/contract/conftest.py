"""The `repository` fixture: one contract suite, run against every store implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from payments_service.storage import PaymentRepository
from tests.support.repositories import IMPLEMENTATIONS, RepositoryFactory


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
