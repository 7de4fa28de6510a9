"""The application service: validation, idempotency and storage, without transport."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from payments_service.domain.errors import (
    IdempotencyKeyReusedError,
    PaymentNotFoundError,
    ValidationError,
)
from payments_service.domain.payment import Payment
from payments_service.domain.validation import validate_payment_id, validate_payment_request
from payments_service.storage.repository import PaymentRepository

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """What RequestPayment did: the payment, and whether it was created by this call."""

    payment: Payment
    created: bool


class PaymentObserver(Protocol):
    """Sees the outcomes of payments (telemetry plugs in here)."""

    def outcome(self, outcome: str, *, currency: str, amount_minor: int) -> None:
        """RequestPayment ended: "created", "replayed", "conflict" or "invalid"."""
        ...


class _Unobserved:
    def outcome(self, outcome: str, *, currency: str, amount_minor: int) -> None:
        return None


class PaymentService:
    """Creates and reads payments. Idempotency lives here and in the store's atomicity."""

    def __init__(
        self, repository: PaymentRepository, observer: PaymentObserver | None = None
    ) -> None:
        self._repository = repository
        self._observer = observer or _Unobserved()

    def request_payment(
        self,
        *,
        amount_minor: int,
        currency: str,
        order_id: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> PaymentResult:
        """Create a payment, or replay the one stored for this idempotency key.

        Raises ValidationError for a malformed request (nothing is stored) and
        IdempotencyKeyReusedError when the key belongs to a different request.
        """
        observer = self._observer
        try:
            request = validate_payment_request(
                amount_minor=amount_minor,
                currency=currency,
                order_id=order_id,
                idempotency_key=idempotency_key,
                metadata=metadata,
            )
        except ValidationError:
            observer.outcome("invalid", currency=currency, amount_minor=amount_minor)
            raise
        candidate = Payment.new(request)
        stored = self._repository.add_if_absent(candidate)
        if stored.payment_id == candidate.payment_id:
            observer.outcome("created", currency=currency, amount_minor=amount_minor)
            logger.debug(
                "Created payment %s (%s %d)",
                stored.payment_id,
                stored.currency,
                stored.amount_minor,
            )
            return PaymentResult(stored, created=True)
        if stored.request_fingerprint != candidate.request_fingerprint:
            logger.debug("Refused reuse of the idempotency key of payment %s", stored.payment_id)
            observer.outcome("conflict", currency=currency, amount_minor=amount_minor)
            raise IdempotencyKeyReusedError(stored.payment_id)
        logger.debug("Replayed payment %s", stored.payment_id)
        observer.outcome("replayed", currency=currency, amount_minor=amount_minor)
        return PaymentResult(stored, created=False)

    def get_payment(self, payment_id: str) -> Payment:
        """The payment with this id. Raises ValidationError or PaymentNotFoundError."""
        canonical_id = validate_payment_id(payment_id)
        payment = self._repository.get(canonical_id)
        if payment is None:
            raise PaymentNotFoundError(canonical_id)
        return payment
