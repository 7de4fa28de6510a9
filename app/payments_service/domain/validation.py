"""Input validation. Every rule is checked and every violation reported at once."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

from payments_service.domain.errors import FieldViolation, ValidationError
from payments_service.domain.payment import PaymentRequest

SUPPORTED_CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CAD", "AUD")
MAX_AMOUNT_MINOR = 99_999_999_999
MIN_IDEMPOTENCY_KEY_LENGTH = 8
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_ORDER_ID_LENGTH = 255
MAX_METADATA_ENTRIES = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500


#: Unicode's control characters (general category Cc): C0, DEL and C1.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")


def _has_control_characters(text: str) -> bool:
    return _CONTROL_CHARACTER.search(text) is not None


def _check_amount(amount_minor: int) -> list[FieldViolation]:
    if amount_minor <= 0:
        return [FieldViolation("amount_minor", "must be greater than 0")]
    if amount_minor > MAX_AMOUNT_MINOR:
        return [FieldViolation("amount_minor", f"must be at most {MAX_AMOUNT_MINOR:,}")]
    return []


def _check_currency(currency: str) -> list[FieldViolation]:
    if currency not in SUPPORTED_CURRENCIES:
        allowed = ", ".join(SUPPORTED_CURRENCIES)
        return [FieldViolation("currency", f"must be one of {allowed}")]
    return []


def _check_idempotency_key(key: str) -> list[FieldViolation]:
    problems = []
    if not MIN_IDEMPOTENCY_KEY_LENGTH <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        problems.append(
            FieldViolation(
                "idempotency_key",
                f"must be {MIN_IDEMPOTENCY_KEY_LENGTH} to {MAX_IDEMPOTENCY_KEY_LENGTH} "
                f"characters long (got {len(key)})",
            )
        )
    if not (key.isascii() and key.isprintable()):
        problems.append(
            FieldViolation("idempotency_key", "must contain printable ASCII characters only")
        )
    return problems


def _check_order_id(order_id: str) -> list[FieldViolation]:
    if not order_id.strip():
        return [FieldViolation("order_id", "must not be empty or blank")]
    problems = []
    if len(order_id) > MAX_ORDER_ID_LENGTH:
        problems.append(
            FieldViolation("order_id", f"must be at most {MAX_ORDER_ID_LENGTH} characters long")
        )
    if _has_control_characters(order_id):
        problems.append(FieldViolation("order_id", "must not contain control characters"))
    return problems


_KEY_LENGTH = f"keys must be 1 to {MAX_METADATA_KEY_LENGTH} characters long"
_KEY_CONTROL = "keys must not contain control characters"
_VALUE_LENGTH = f"values must be at most {MAX_METADATA_VALUE_LENGTH} characters long"
_VALUE_NUL = "values must not contain NUL characters"


def _check_metadata(metadata: Mapping[str, str]) -> list[FieldViolation]:
    # Customer keys and values are never echoed back: they may hold personal data.
    problems = []
    if len(metadata) > MAX_METADATA_ENTRIES:
        problems.append(
            FieldViolation("metadata", f"must have at most {MAX_METADATA_ENTRIES} entries")
        )
    counts = dict.fromkeys((_KEY_LENGTH, _KEY_CONTROL, _VALUE_LENGTH, _VALUE_NUL), 0)
    for key, value in metadata.items():
        counts[_KEY_LENGTH] += not 1 <= len(key) <= MAX_METADATA_KEY_LENGTH
        counts[_KEY_CONTROL] += _has_control_characters(key)
        counts[_VALUE_LENGTH] += len(value) > MAX_METADATA_VALUE_LENGTH
        counts[_VALUE_NUL] += "\x00" in value
    problems.extend(
        FieldViolation(
            "metadata",
            f"{description} ({count} {'entry breaks' if count == 1 else 'entries break'} this)",
        )
        for description, count in counts.items()
        if count
    )
    return problems


def validate_payment_request(request: PaymentRequest) -> None:
    """Raise :class:`ValidationError` listing every problem of ``request``, if it has any."""
    violations = [
        *_check_amount(request.amount_minor),
        *_check_currency(request.currency),
        *_check_order_id(request.order_id),
        *_check_idempotency_key(request.idempotency_key),
        *_check_metadata(request.metadata),
    ]
    if violations:
        raise ValidationError(violations)


def validate_payment_id(payment_id: str) -> str:
    """Return the canonical form of a payment id, or raise :class:`ValidationError`."""
    try:
        if len(payment_id) > 45:  # longest spelling uuid.UUID accepts ("urn:uuid:" + 36)
            raise ValueError(payment_id)
        return str(uuid.UUID(payment_id))
    except ValueError:
        raise ValidationError(
            [
                FieldViolation(
                    "payment_id", "must be a UUID such as 550e8400-e29b-41d4-a716-446655440000"
                )
            ]
        ) from None
