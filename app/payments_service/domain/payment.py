"""The payment entity and the request that creates one."""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring as _json_string  # json.dumps' own
from types import MappingProxyType
from typing import NamedTuple


class PaymentStatus(enum.StrEnum):
    """Lifecycle of a payment. Values are the names stored and shown to callers.

    A StrEnum, so that a member hashes as its value does, in C: a plain Enum's hash is a
    Python call, and every call looks a status up in a dict (its protobuf value).
    """

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


def _new_payment_id() -> str:
    """A random (version 4) UUID in its canonical text form, as str(uuid.uuid4()) makes it,
    at less than half the cost (no UUID object on the way)."""
    h = os.urandom(16).hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


#: An empty metadata mapping that no one can change (the default of both records).
NO_METADATA: Mapping[str, str] = MappingProxyType({})


class PaymentRequest(NamedTuple):
    """A request for a payment, as the caller made it.

    :func:`~payments_service.domain.validation.validate_payment_request` decides whether
    it may become a :class:`Payment`; nothing else about it is checked here.

    The domain's records are NamedTuples: immutable as frozen dataclasses are, and made at
    a fraction of the cost (a frozen dataclass sets each field through object.__setattr__),
    which matters as every call makes several.
    """

    amount_minor: int
    currency: str
    order_id: str
    idempotency_key: str
    metadata: Mapping[str, str] = NO_METADATA

    def fingerprint(self) -> str:
        """A digest of everything that must match for a retry to count as a replay.

        The digest is of the compact JSON of ``[amount, currency, order_id, sorted metadata
        items]`` (what ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``
        writes), spelled out with json's own string escaper, which costs half as much.
        Fingerprints are stored: these bytes must never change (a golden test pins them).
        """
        entries = (
            ",".join(
                [f"[{_json_string(k)},{_json_string(v)}]" for k, v in sorted(self.metadata.items())]
            )
            if self.metadata
            else ""
        )
        canonical = (
            f"[{self.amount_minor},{_json_string(self.currency)},"
            f"{_json_string(self.order_id)},[{entries}]]"
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class Payment(NamedTuple):
    """A recorded payment. Immutable: a status change produces a new value."""

    payment_id: str
    idempotency_key: str
    amount_minor: int
    currency: str
    order_id: str
    metadata: Mapping[str, str]
    status: PaymentStatus
    created_at: datetime

    @property
    def request_fingerprint(self) -> str:
        """The fingerprint of its request: what a retry must match to be a replay.

        Computed when asked, from the fields it is a digest of: only a replay and the
        PostgreSQL store (which keeps it in a column) need it, not every new payment.
        """
        request = PaymentRequest(
            self.amount_minor, self.currency, self.order_id, self.idempotency_key, self.metadata
        )
        return request.fingerprint()

    @classmethod
    def new(cls, request: PaymentRequest, *, now: datetime | None = None) -> Payment:
        """A new PENDING payment for a validated ``request``, with a fresh random id."""
        metadata = request.metadata
        # Positional: keyword arguments cost a NamedTuple half as much again per call.
        return cls(
            _new_payment_id(),
            request.idempotency_key,
            request.amount_minor,
            request.currency,
            request.order_id,
            MappingProxyType(dict(metadata)) if metadata else NO_METADATA,
            PaymentStatus.PENDING,
            now or datetime.now(UTC),
        )
