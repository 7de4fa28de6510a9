"""The embedded default store: in process memory, gone on restart."""

from __future__ import annotations

from payments_service.domain.payment import Payment


class InMemoryPaymentRepository:
    """A :class:`~payments_service.storage.repository.PaymentRepository` in two dicts.

    It lives on the server's event loop, and no method awaits anything: the check for an
    existing key and the insert are one atomic step, as a UNIQUE constraint makes them in
    a database, with no lock.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, Payment] = {}
        self._by_key: dict[str, Payment] = {}

    async def add_if_absent(self, payment: Payment) -> Payment:
        existing = self._by_key.get(payment.idempotency_key)
        if existing is not None:
            return existing
        self._by_key[payment.idempotency_key] = payment
        self._by_id[payment.payment_id] = payment
        return payment

    async def get(self, payment_id: str) -> Payment | None:
        return self._by_id.get(payment_id)

    async def count(self) -> int:
        return len(self._by_id)

    async def close(self) -> None:
        """Nothing to release."""
