"""The embedded default store: thread-safe, in process memory, gone on restart."""

from __future__ import annotations

import threading

from payments_service.domain.payment import Payment


class InMemoryPaymentRepository:
    """A :class:`~payments_service.storage.repository.PaymentRepository` in two dicts.

    One lock guards both indexes, so the check for an existing key and the insert
    are a single atomic step, as a UNIQUE constraint makes them in a database.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Payment] = {}
        self._by_key: dict[str, Payment] = {}

    def add_if_absent(self, payment: Payment) -> Payment:
        with self._lock:
            existing = self._by_key.get(payment.idempotency_key)
            if existing is not None:
                return existing
            self._by_key[payment.idempotency_key] = payment
            self._by_id[payment.payment_id] = payment
            return payment

    def get(self, payment_id: str) -> Payment | None:
        return self._by_id.get(payment_id)

    def count(self) -> int:
        return len(self._by_id)

    def close(self) -> None:
        """Nothing to release."""
