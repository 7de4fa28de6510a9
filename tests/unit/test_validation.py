"""Validation rules, their bounds (property-based) and the all-at-once reporting."""

from __future__ import annotations

import string
import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments_service.domain.errors import ValidationError
from payments_service.domain.payment import PaymentRequest
from payments_service.domain.validation import (
    MAX_AMOUNT_MINOR,
    SUPPORTED_CURRENCIES,
    validate_payment_id,
    validate_payment_request,
)

VALID = {
    "amount_minor": 1250,
    "currency": "USD",
    "order_id": "order-123",
    "idempotency_key": "test-key-12345678",
    "metadata": {"user_id": "user-789"},
}


def violations(**changes: object) -> list[tuple[str, str]]:
    """The (field, description) pairs for VALID with ``changes`` applied ([] when valid)."""
    try:
        validate_payment_request(PaymentRequest(**{**VALID, **changes}))  # type: ignore[arg-type]
    except ValidationError as error:
        found = error.violations
    else:
        return []
    assert found, "a ValidationError always names a violation"
    return [(v.field, v.description) for v in found]


def fields(**changes: object) -> list[str]:
    return [field for field, _ in violations(**changes)]


def test_a_valid_request_passes() -> None:
    assert violations() == []


def test_every_violation_is_reported_at_once() -> None:
    assert fields(amount_minor=0, currency="usd", order_id="", idempotency_key="short") == [
        "amount_minor",
        "currency",
        "order_id",
        "idempotency_key",
    ]


@given(st.integers(min_value=1, max_value=MAX_AMOUNT_MINOR))
def test_amounts_in_range_are_accepted(amount: int) -> None:
    assert violations(amount_minor=amount) == []


@given(st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_AMOUNT_MINOR + 1)))
def test_amounts_out_of_range_are_refused(amount: int) -> None:
    assert fields(amount_minor=amount) == ["amount_minor"]


@pytest.mark.parametrize("currency", SUPPORTED_CURRENCIES)
def test_supported_currencies_are_accepted(currency: str) -> None:
    assert violations(currency=currency) == []


@given(st.text(max_size=5).filter(lambda c: c not in SUPPORTED_CURRENCIES))
def test_other_currencies_are_refused_with_the_allowed_list(currency: str) -> None:
    assert violations(currency=currency) == [
        ("currency", "must be one of USD, EUR, GBP, JPY, CAD, AUD")
    ]


PRINTABLE_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@given(st.text(PRINTABLE_ASCII, min_size=8, max_size=255))
def test_idempotency_keys_of_8_to_255_printable_ascii_are_accepted(key: str) -> None:
    assert violations(idempotency_key=key) == []


@given(st.one_of(st.text(PRINTABLE_ASCII, max_size=7), st.text(PRINTABLE_ASCII, min_size=256)))
def test_idempotency_keys_of_other_lengths_are_refused(key: str) -> None:
    assert fields(idempotency_key=key) == ["idempotency_key"]


@given(st.text(min_size=8, max_size=40).filter(lambda k: not (k.isascii() and k.isprintable())))
def test_idempotency_keys_with_other_characters_are_refused(key: str) -> None:
    assert "idempotency_key" in fields(idempotency_key=key)


@pytest.mark.parametrize("order_id", ["", " ", "\t\n  "])
def test_blank_order_ids_are_refused(order_id: str) -> None:
    assert violations(order_id=order_id) == [("order_id", "must not be empty or blank")]


def test_order_id_length_limit() -> None:
    assert violations(order_id="o" * 255) == []
    assert fields(order_id="o" * 256) == ["order_id"]


def test_order_ids_with_control_characters_are_refused() -> None:
    assert fields(order_id="order\x00-1") == ["order_id"]


def test_control_characters_are_exactly_unicodes_category_cc() -> None:
    everything = (chr(code) for code in range(sys.maxunicode + 1))
    control = {ch for ch in everything if unicodedata.category(ch) == "Cc"}
    for ch in control:
        assert fields(order_id=f"order{ch}1") == ["order_id"], hex(ord(ch))
        assert fields(metadata={f"k{ch}": "v"}) == ["metadata"], hex(ord(ch))
    printable_neighbours = {"\x20", "\x7e", "\xa0", "\u2028", "\U0010ffff"}
    for ch in printable_neighbours:
        assert violations(order_id=f"order{ch}1") == []


def test_metadata_bounds() -> None:
    fifty = {f"k{i}": "v" for i in range(50)}
    assert violations(metadata=fifty) == []
    assert fields(metadata={f"k{i}": "v" for i in range(51)}) == ["metadata"]
    assert fields(metadata={"": "v"}) == ["metadata"]
    assert fields(metadata={"k" * 41: "v"}) == ["metadata"]
    assert fields(metadata={"k": "v" * 501}) == ["metadata"]
    assert fields(metadata={"k": "nul\x00"}) == ["metadata"]
    assert violations(metadata={"k" * 40: "v" * 500}) == []


def test_metadata_errors_never_echo_customer_keys_or_values() -> None:
    described = violations(metadata={"secret-key-" + "x" * 40: "secret-value" * 50})
    assert described
    assert all("secret" not in description for _, description in described)


def test_counts_in_messages_read_as_english() -> None:
    one = {"k" * 41: "v"}
    two = {"k" * 41: "v", "j" * 41: "v"}
    assert violations(metadata=one) == [
        ("metadata", "keys must be 1 to 40 characters long (1 entry breaks this)")
    ]
    assert violations(metadata=two)[0][1].endswith("(2 entries break this)")
    messages = {}
    cases: dict[str, dict[str, object]] = {
        "one": {"currency": "usd"},
        "two": {"currency": "", "amount_minor": 0},
    }
    for name, changes in cases.items():
        with pytest.raises(ValidationError) as caught:
            validate_payment_request(PaymentRequest(**{**VALID, **changes}))  # type: ignore[arg-type]
        messages[name] = str(caught.value)
    assert messages == {
        "one": "invalid request: 1 problem with currency",
        "two": "invalid request: 2 problems with amount_minor, currency",
    }


def test_payment_ids_must_be_uuids_and_are_canonicalised() -> None:
    assert (
        validate_payment_id("550E8400-E29B-41D4-A716-446655440000")
        == "550e8400-e29b-41d4-a716-446655440000"
    )
    for bad in ("", "nope", "550e8400", "x" * 10_000):
        with pytest.raises(ValidationError) as caught:
            validate_payment_id(bad)
        assert [v.field for v in caught.value.violations] == ["payment_id"]


def test_every_printable_ascii_character_is_allowed_in_a_key() -> None:
    # Space included: string.printable's first 95 characters are 0-9a-zA-Z, punctuation, " ".
    assert violations(idempotency_key=string.printable[:95]) == []
