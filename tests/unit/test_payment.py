"""The payment entity and the request fingerprint that decides replay vs conflict."""

from __future__ import annotations

import uuid

from payments_service.domain.payment import Payment, PaymentRequest, PaymentStatus


def request(**changes: object) -> PaymentRequest:
    values: dict[str, object] = {
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
    assert payment.created_at.utcoffset() is not None
    assert payment.created_at.utcoffset().total_seconds() == 0


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
