"""The payment entity and the request that creates one."""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType


class PaymentStatus(enum.Enum):
    """Lifecycle of a payment. Values are the names stored and shown to callers."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


#: What json.dumps(..., ensure_ascii=False, separators=(",", ":")) would build on every
#: call, built once: fingerprints are stored, so their bytes must never change.
_CANONICAL_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """A request for a payment, as the caller made it.

    :func:`~payments_service.domain.validation.validate_payment_request` decides whether
    it may become a :class:`Payment`; nothing else about it is checked here.
    """

    amount_minor: int
    currency: str
    order_id: str
    idempotency_key: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """A digest of everything that must match for a retry to count as a replay."""
        canonical = _CANONICAL_JSON.encode(
            [self.amount_minor, self.currency, self.order_id, sorted(self.metadata.items())]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Payment:
    """A recorded payment. Immutable: a status change produces a new value."""

    payment_id: str
    idempotency_key: str
    request_fingerprint: str
    amount_minor: int
    currency: str
    order_id: str
    metadata: Mapping[str, str]
    status: PaymentStatus
    created_at: datetime

    @classmethod
    def new(cls, request: PaymentRequest, *, now: datetime | None = None) -> Payment:
        """A new PENDING payment for a validated ``request``, with a fresh random id."""
        return cls(
            payment_id=str(uuid.uuid4()),
            idempotency_key=request.idempotency_key,
            request_fingerprint=request.fingerprint(),
            amount_minor=request.amount_minor,
            currency=request.currency,
            order_id=request.order_id,
            metadata=MappingProxyType(dict(request.metadata)),
            status=PaymentStatus.PENDING,
            created_at=now or datetime.now(UTC),
        )
