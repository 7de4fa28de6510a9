"""Helpers shared by the hardening tests (limits, TLS, fuzz, faults, security)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from payments_service import payments_pb2
from payments_service.domain.payment import Payment
from payments_service.storage import InMemoryPaymentRepository


def valid_request(key: str | None = None, **changes: Any) -> payments_pb2.RequestPaymentRequest:
    """A RequestPaymentRequest that passes validation, with a fresh key unless given."""
    values: dict[str, Any] = {
        "amount_minor": 1250,
        "currency": "EUR",
        "order_id": "order-hardening",
        "idempotency_key": key or f"key-{uuid.uuid4()}",
    }
    values.update(changes)
    return payments_pb2.RequestPaymentRequest(**values)


class GatedRepository(InMemoryPaymentRepository):
    """The real in-memory store, but every insert waits until :attr:`gate` opens.

    Lets a test hold calls inside the server (occupying worker threads) at will.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self._entered = threading.Semaphore(0)

    def add_if_absent(self, payment: Payment) -> Payment:
        self._entered.release()
        self.gate.wait(timeout=30)
        return super().add_if_absent(payment)

    def wait_entered(self, calls: int, timeout: float = 10.0) -> None:
        """Block until ``calls`` more inserts have reached the gate."""
        for _ in range(calls):
            if not self._entered.acquire(timeout=timeout):
                raise TimeoutError("a call did not reach the store")
