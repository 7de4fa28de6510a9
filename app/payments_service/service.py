"""The application service: validation, idempotency and storage, without transport."""

from __future__ import annotations

import enum
import logging
from typing import NamedTuple, Protocol

from payments_service.domain.errors import (
    IdempotencyKeyReusedError,
    PaymentNotFoundError,
    ValidationError,
)
from payments_service.domain.payment import Payment, PaymentRequest
from payments_service.domain.validation import validate_payment_id, validate_payment_request
from payments_service.storage.repository import PaymentRepository

logger = logging.getLogger(__name__)


class PaymentOutcome(enum.StrEnum):
    """How a RequestPayment call ended. Values are the ``outcome`` label of the metrics.

    A StrEnum, so that a member hashes in C (the metrics count by outcome on every call).
    """

    CREATED = "created"
    REPLAYED = "replayed"
    CONFLICT = "conflict"
    INVALID = "invalid"


class PaymentResult(NamedTuple):
    """What RequestPayment did: the payment, and whether it was created by this call."""

    payment: Payment
    created: bool


class PaymentObserver(Protocol):
    """Sees the outcomes of payments (telemetry plugs in here)."""

    def outcome(self, outcome: PaymentOutcome, request: PaymentRequest) -> None:
        """RequestPayment for ``request`` ended with ``outcome``."""
        ...


class _Unobserved:
    def outcome(self, _outcome: PaymentOutcome, _request: PaymentRequest) -> None:
        return None


class PaymentService:
    """Creates and reads payments. Idempotency lives here and in the store's atomicity."""

    def __init__(
        self, repository: PaymentRepository, observer: PaymentObserver | None = None
    ) -> None:
        self._repository = repository
        self._observer = observer or _Unobserved()

    async def request_payment(self, request: PaymentRequest) -> PaymentResult:
        """Create a payment, or replay the one stored for this idempotency key.

        Raises ValidationError for a malformed request (nothing is stored) and
        IdempotencyKeyReusedError when the key belongs to a different request.
        """
        observer = self._observer
        try:
            validate_payment_request(request)
        except ValidationError:
            observer.outcome(PaymentOutcome.INVALID, request)
            raise
        candidate = Payment.new(request)
        stored = await self._repository.add_if_absent(candidate)
        if stored.payment_id == candidate.payment_id:
            observer.outcome(PaymentOutcome.CREATED, request)
            logger.debug(
                "Created payment %s (%s %d)",
                stored.payment_id,
                stored.currency,
                stored.amount_minor,
            )
            return PaymentResult(stored, created=True)
        if stored.request_fingerprint != request.fingerprint():
            logger.debug("Refused reuse of the idempotency key of payment %s", stored.payment_id)
            observer.outcome(PaymentOutcome.CONFLICT, request)
            raise IdempotencyKeyReusedError(stored.payment_id)
        observer.outcome(PaymentOutcome.REPLAYED, request)
        return PaymentResult(stored, created=False)

    async def get_payment(self, payment_id: str) -> Payment:
        """The payment with this id. Raises ValidationError or PaymentNotFoundError."""
        canonical_id = validate_payment_id(payment_id)
        payment = await self._repository.get(canonical_id)
        if payment is None:
            raise PaymentNotFoundError(canonical_id)
        return payment
