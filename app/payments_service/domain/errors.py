"""Domain errors. The transport layer maps each one to a gRPC status in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with one field of a request."""

    field: str
    description: str


class DomainError(Exception):
    """Base class of every error the service raises on purpose."""

    #: A stable, machine-readable reason (UPPER_SNAKE_CASE), sent as ErrorInfo.reason.
    reason: str = "PAYMENT_ERROR"


class ValidationError(DomainError):
    """The request is malformed; every violation is reported at once."""

    reason = "INVALID_REQUEST"

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = tuple(violations)
        fields = ", ".join(sorted({v.field for v in violations}))
        count = len(violations)
        super().__init__(
            f"invalid request: {count} problem{'s' if count != 1 else ''} with {fields}"
        )


class IdempotencyKeyReusedError(DomainError):
    """The idempotency key was already used for a request with other parameters."""

    reason = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id
        super().__init__(
            "idempotency key was already used for a different request "
            "(amount, currency, order id or metadata differ); use a new key"
        )


class PaymentNotFoundError(DomainError):
    """No payment has the requested id."""

    reason = "PAYMENT_NOT_FOUND"

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id
        super().__init__(f"payment {payment_id} not found")


class StoreUnavailableError(DomainError):
    """The payment store cannot be reached right now; the caller may retry."""

    reason = "STORE_UNAVAILABLE"

    def __init__(self, message: str = "payment store is unavailable, retry later") -> None:
        super().__init__(message)
