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


def _check_amount(amount_minor: int, problems: list[FieldViolation]) -> None:
    if amount_minor <= 0:
        problems.append(FieldViolation("amount_minor", "must be greater than 0"))
    elif amount_minor > MAX_AMOUNT_MINOR:
        problems.append(FieldViolation("amount_minor", f"must be at most {MAX_AMOUNT_MINOR:,}"))


def _check_currency(currency: str, problems: list[FieldViolation]) -> None:
    if currency not in SUPPORTED_CURRENCIES:
        allowed = ", ".join(SUPPORTED_CURRENCIES)
        problems.append(FieldViolation("currency", f"must be one of {allowed}"))


def _check_idempotency_key(key: str, problems: list[FieldViolation]) -> None:
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


def _check_order_id(order_id: str, problems: list[FieldViolation]) -> None:
    if not order_id.strip():
        problems.append(FieldViolation("order_id", "must not be empty or blank"))
        return
    if len(order_id) > MAX_ORDER_ID_LENGTH:
        problems.append(
            FieldViolation("order_id", f"must be at most {MAX_ORDER_ID_LENGTH} characters long")
        )
    if _CONTROL_CHARACTER.search(order_id) is not None:
        problems.append(FieldViolation("order_id", "must not contain control characters"))


#: What each count in _check_metadata counts, in order.
_METADATA_RULES = (
    f"keys must be 1 to {MAX_METADATA_KEY_LENGTH} characters long",
    "keys must not contain control characters",
    f"values must be at most {MAX_METADATA_VALUE_LENGTH} characters long",
    "values must not contain NUL characters",
)


def _entries(count: int) -> str:
    return "1 entry breaks" if count == 1 else f"{count} entries break"


def _check_metadata(metadata: Mapping[str, str], problems: list[FieldViolation]) -> None:
    # Customer keys and values are never echoed back: they may hold personal data.
    if len(metadata) > MAX_METADATA_ENTRIES:
        problems.append(
            FieldViolation("metadata", f"must have at most {MAX_METADATA_ENTRIES} entries")
        )
    key_length = key_control = value_length = value_nul = 0
    for key, value in metadata.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY_LENGTH:
            key_length += 1
        if _CONTROL_CHARACTER.search(key) is not None:
            key_control += 1
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            value_length += 1
        if "\x00" in value:
            value_nul += 1
    for description, count in zip(
        _METADATA_RULES, (key_length, key_control, value_length, value_nul), strict=True
    ):
        if count:
            problems.append(FieldViolation("metadata", f"{description} ({_entries(count)} this)"))


def validate_payment_request(request: PaymentRequest) -> None:
    """Raise :class:`ValidationError` listing every problem of ``request``, if it has any."""
    problems: list[FieldViolation] = []
    _check_amount(request.amount_minor, problems)
    _check_currency(request.currency, problems)
    _check_order_id(request.order_id, problems)
    _check_idempotency_key(request.idempotency_key, problems)
    if request.metadata:
        _check_metadata(request.metadata, problems)
    if problems:
        raise ValidationError(problems)


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
