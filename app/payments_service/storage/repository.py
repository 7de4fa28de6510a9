"""The repository protocol every payment store implements.

The contract (tests/contract) runs one suite against every implementation, so a
store that passes it behaves exactly like the others. Stores are used from the
server's event loop: every method is a coroutine.
"""

from __future__ import annotations

from typing import Protocol

from payments_service.domain.payment import Payment


class PaymentRepository(Protocol):
    """Stores payments, at most one per idempotency key."""

    async def add_if_absent(self, payment: Payment) -> Payment:
        """Store ``payment`` unless one with the same idempotency key exists.

        Returns the payment stored for that key: ``payment`` itself when it was
        inserted, otherwise the earlier one. Atomic: of any number of concurrent
        calls with one key, exactly one inserts and all return that one.
        Raises StoreUnavailableError when the store cannot be reached.
        """
        ...

    async def get(self, payment_id: str) -> Payment | None:
        """The payment with this id, or None."""
        ...

    async def count(self) -> int:
        """How many payments are stored."""
        ...

    async def close(self) -> None:
        """Release connections and other resources."""
        ...
