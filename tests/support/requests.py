"""The plain valid RequestPayment every test that needs one builds from."""

from __future__ import annotations

import uuid
from typing import Any

from payments_service import payments_pb2


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
