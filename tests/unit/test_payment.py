"""The payment entity and the request fingerprint that decides replay vs conflict."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from payments_service.domain.payment import Payment, PaymentRequest, PaymentStatus


def request(**changes: Any) -> PaymentRequest:
    values: dict[str, Any] = {
        "amount_minor": 1250,
        "currency": "USD",
        "order_id": "order-123",
        "idempotency_key": "key-12345678",
        "metadata": {"a": "1", "b": "2"},
    }
    values.update(changes)
    return PaymentRequest(**values)


def test_new_payment_is_pending_with_a_uuid_and_utc_time() -> None:
    payment = Payment.new(request())
    assert uuid.UUID(payment.payment_id).version == 4
    assert payment.status is PaymentStatus.PENDING
    offset = payment.created_at.utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0


def test_fingerprint_ignores_metadata_order_and_the_key() -> None:
    assert (
        request(metadata={"a": "1", "b": "2"}).fingerprint()
        == request(metadata={"b": "2", "a": "1"}, idempotency_key="other-key-1").fingerprint()
    )


def test_fingerprint_changes_with_every_field_that_matters() -> None:
    base = request().fingerprint()
    for change in (
        {"amount_minor": 1251},
        {"currency": "EUR"},
        {"order_id": "order-124"},
        {"metadata": {"a": "1"}},
        {"metadata": {"a": "1", "b": "3"}},
    ):
        assert request(**change).fingerprint() != base, change


def test_fingerprint_is_not_fooled_by_separators() -> None:
    # Naive concatenation would make these two equal.
    assert (
        request(order_id="a", metadata={"b": "c"}).fingerprint()
        != request(order_id="a,b", metadata={"": "c"}).fingerprint()
    )


def test_stored_metadata_cannot_be_changed_through_the_payment() -> None:
    source = {"a": "1"}
    payment = Payment.new(request(metadata=source))
    source["a"] = "changed"
    assert payment.metadata["a"] == "1"


def test_fingerprint_bytes_never_change() -> None:
    # Fingerprints are stored with every payment (PostgreSQL): if this digest changed, a
    # retry of a payment made before an upgrade would be refused as a different request.
    fingerprint = request(
        amount_minor=1250,
        currency="EUR",
        order_id="order-ü-1",
        metadata={"b": "2", "a": 'é"'},
    ).fingerprint()
    assert fingerprint == "3472b08263e0399c0e4b173892fd1ed2de53397115ae5113d7505f083a227204"


def _json_fingerprint(request: PaymentRequest) -> str:
    """The definition the fingerprint must keep: sha256 of json.dumps' compact JSON."""
    canonical = json.dumps(
        [
            request.amount_minor,
            request.currency,
            request.order_id,
            sorted(request.metadata.items()),
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@given(
    amount=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    currency=st.text(max_size=5),
    order_id=st.text(max_size=40),
    metadata=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5),
)
def test_fingerprint_is_exactly_the_json_definition_for_any_text(
    amount: int, currency: str, order_id: str, metadata: dict[str, str]
) -> None:
    # Any text: quotes, backslashes, control characters, surrogates, emoji.
    request = PaymentRequest(amount, currency, order_id, "key-00000001", metadata)
    assert request.fingerprint() == _json_fingerprint(request)


def test_payment_ids_are_random_version_4_uuids_in_canonical_form() -> None:
    request = PaymentRequest(1, "USD", "o", "key-00000001")
    ids = [Payment.new(request).payment_id for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for payment_id in ids:
        parsed = uuid.UUID(payment_id)
        assert str(parsed) == payment_id  # lower-case, hyphenated
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # Every hex digit but the version's, and all four variants, turn up.
    assert {i[19] for i in ids} == set("89ab")
    assert {i[0] for i in ids} == set("0123456789abcdef")
