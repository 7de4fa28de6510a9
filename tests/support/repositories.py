"""Stores for tests: every implementation, empty (for the contract suite), and the real
in-memory store with a fault of the test's choosing: failing for some keys, or holding
every insert until the test lets it through."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable

from payments_service.domain.errors import StoreUnavailableError
from payments_service.domain.payment import Payment
from payments_service.storage import InMemoryPaymentRepository, PaymentRepository
from payments_service.storage.postgres import PostgresPaymentRepository
from tests.support.postgres import fresh_database

RepositoryFactory = Callable[[], Awaitable[PaymentRepository]]


async def _memory() -> AsyncGenerator[RepositoryFactory, None]:
    async def make() -> PaymentRepository:
        return InMemoryPaymentRepository()

    yield make


async def _postgres() -> AsyncGenerator[RepositoryFactory, None]:
    # A database of its own per test, migrated, dropped afterwards (see tests/support/postgres.py).
    with fresh_database() as url:

        async def make() -> PaymentRepository:
            return await PostgresPaymentRepository.open(
                url, min_size=1, max_size=16, timeout_seconds=5
            )

        yield make


#: Implementation name -> an async generator yielding a factory of empty repositories
#: (the contract tests' ``repository_factory`` fixture runs once per entry).
IMPLEMENTATIONS: dict[str, Callable[[], AsyncGenerator[RepositoryFactory, None]]] = {
    "memory": _memory,
    "postgres": _postgres,
}


class FaultyRepository(InMemoryPaymentRepository):
    """The in-memory store, failing on purpose for idempotency keys with a fault prefix:
    ``crash-`` raises an unexpected error (a bug), ``down-`` says the store is unavailable."""

    async def add_if_absent(self, payment: Payment) -> Payment:
        if payment.idempotency_key.startswith("crash-"):
            raise RuntimeError("simulated bug")
        if payment.idempotency_key.startswith("down-"):
            raise StoreUnavailableError()
        return await super().add_if_absent(payment)


class GatedRepository(InMemoryPaymentRepository):
    """The real in-memory store, but every insert waits until :meth:`open` is called.

    Lets a test hold calls inside the server (occupying its MAX_WORKERS slots) at will.
    Build it on the server's event loop (pass the class as the ``repository`` factory).
    """

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._gate = asyncio.Event()
        self._entered = threading.Semaphore(0)

    def open(self) -> None:
        """Let every waiting and later insert through (callable from any thread)."""
        self._loop.call_soon_threadsafe(self._gate.set)

    async def add_if_absent(self, payment: Payment) -> Payment:
        self._entered.release()
        await asyncio.wait_for(self._gate.wait(), timeout=30)
        return await super().add_if_absent(payment)

    def wait_entered(self, calls: int, timeout: float = 10.0) -> None:
        """Block until ``calls`` more inserts have reached the gate."""
        for _ in range(calls):
            if not self._entered.acquire(timeout=timeout):
                raise TimeoutError("a call did not reach the store")
