"""Conversion between protobuf messages and domain values."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from payments_service import payments_pb2
from payments_service.domain.payment import Payment, PaymentRequest, PaymentStatus
from payments_service.service import PaymentResult

_STATUS_TO_PROTO = {
    status: payments_pb2.PaymentStatus.Value(f"PAYMENT_STATUS_{status.value}")
    for status in PaymentStatus
}

CREATED_MESSAGE = "Payment created"
REPLAYED_MESSAGE = (
    "Payment already exists for this idempotency key; returning it (replay, nothing new created)"
)


def payment_request_from_proto(request: payments_pb2.RequestPaymentRequest) -> PaymentRequest:
    """The domain's request for this RequestPayment message (not validated yet)."""
    metadata = request.metadata
    # Positional (the fields' order): keyword arguments cost a NamedTuple half as much again.
    return PaymentRequest(
        request.amount_minor,
        request.currency,
        request.order_id,
        request.idempotency_key,
        # items(): half the cost of copying a protobuf map directly; most requests have none.
        dict(metadata.items()) if metadata else {},
    )


def payment_result_to_proto(result: PaymentResult) -> payments_pb2.RequestPaymentResponse:
    """The RequestPayment response for a created or replayed payment."""
    return payments_pb2.RequestPaymentResponse(
        payment_id=result.payment.payment_id,
        status=_STATUS_TO_PROTO[result.payment.status],
        message=CREATED_MESSAGE if result.created else REPLAYED_MESSAGE,
    )


def payment_to_proto(payment: Payment) -> payments_pb2.Payment:
    """The whole payment as a protobuf message."""
    created_at = Timestamp()
    created_at.FromDatetime(payment.created_at)
    return payments_pb2.Payment(
        payment_id=payment.payment_id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        order_id=payment.order_id,
        metadata=dict(payment.metadata),
        status=_STATUS_TO_PROTO[payment.status],
        created_at=created_at,
    )
