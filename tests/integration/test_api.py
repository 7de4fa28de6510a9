"""Every RPC through a real channel to a real server: answers, status codes, error details."""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from payments_service import payments_pb2
from payments_service.domain.payment import Payment
from payments_service.payments_pb2_grpc import PaymentServiceStub
from payments_service.storage import InMemoryPaymentRepository
from tests.support.requests import valid_request
from tests.support.servers import RunningServer

PENDING = payments_pb2.PAYMENT_STATUS_PENDING


def payment_request(**changes: Any) -> payments_pb2.RequestPaymentRequest:
    values: dict[str, Any] = {
        "currency": "USD",
        "order_id": "order-123",
        "metadata": {"user_id": "user-789"},
    }
    return valid_request(**{**values, **changes})


def error_details(error: grpc.RpcError) -> dict[str, Any]:
    """ErrorInfo and BadRequest unpacked from a failed call's google.rpc.Status."""
    assert isinstance(error, grpc.Call)  # grpcio's errors are the failed call too
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status details"
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


def test_request_payment_creates_a_pending_payment(stub: PaymentServiceStub) -> None:
    response = stub.RequestPayment(payment_request())
    assert str(uuid.UUID(response.payment_id)) == response.payment_id
    assert response.status == PENDING
    assert response.message == "Payment created"


def test_get_payment_returns_the_whole_payment(stub: PaymentServiceStub) -> None:
    created = stub.RequestPayment(payment_request(metadata={"user_id": "u-1", "cart": "c-9"}))
    payment = stub.GetPayment(payments_pb2.GetPaymentRequest(payment_id=created.payment_id))
    assert payment.payment_id == created.payment_id
    assert (payment.amount_minor, payment.currency, payment.order_id) == (1250, "USD", "order-123")
    assert dict(payment.metadata) == {"user_id": "u-1", "cart": "c-9"}
    assert payment.status == PENDING
    assert payment.created_at.seconds > 1_700_000_000


def test_get_payment_accepts_an_upper_case_id(stub: PaymentServiceStub) -> None:
    created = stub.RequestPayment(payment_request())
    payment = stub.GetPayment(payments_pb2.GetPaymentRequest(payment_id=created.payment_id.upper()))
    assert payment.payment_id == created.payment_id


def test_same_key_and_request_replays_the_original(
    stub: PaymentServiceStub, server: RunningServer
) -> None:
    request = payment_request()
    first = stub.RequestPayment(request)
    second = stub.RequestPayment(request)
    assert second.payment_id == first.payment_id
    assert "replay" in second.message
    assert server.count() == 1


def test_metadata_order_does_not_matter_for_a_replay(stub: PaymentServiceStub) -> None:
    key = f"key-{uuid.uuid4()}"
    first = stub.RequestPayment(payment_request(idempotency_key=key, metadata={"a": "1", "b": "2"}))
    again = stub.RequestPayment(payment_request(idempotency_key=key, metadata={"b": "2", "a": "1"}))
    assert again.payment_id == first.payment_id


@pytest.mark.parametrize(
    "change",
    [
        {"amount_minor": 1251},
        {"currency": "EUR"},
        {"order_id": "order-999"},
        {"metadata": {"user_id": "someone-else"}},
    ],
)
def test_same_key_with_a_different_request_is_refused(
    stub: PaymentServiceStub, server: RunningServer, change: dict[str, Any]
) -> None:
    key = f"key-{uuid.uuid4()}"
    original = stub.RequestPayment(payment_request(idempotency_key=key))

    with pytest.raises(grpc.RpcError) as caught:
        stub.RequestPayment(payment_request(idempotency_key=key, **change))

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details(caught.value)["ErrorInfo"]
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert info.metadata["payment_id"] == original.payment_id
    stored = stub.GetPayment(payments_pb2.GetPaymentRequest(payment_id=original.payment_id))
    assert stored.amount_minor == 1250
    assert stored.currency == "USD"
    assert server.count() == 1


def test_invalid_request_lists_every_field_violation(
    stub: PaymentServiceStub, server: RunningServer
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.RequestPayment(
            payments_pb2.RequestPaymentRequest(
                amount_minor=-5, currency="DOGE", order_id=" ", idempotency_key="short"
            )
        )
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "amount_minor" in (error.details() or "")
    details = error_details(error)
    assert details["ErrorInfo"].reason == "INVALID_REQUEST"
    assert details["ErrorInfo"].domain == "payments.v1"
    violated = [v.field for v in details["BadRequest"].field_violations]
    assert violated == ["amount_minor", "currency", "order_id", "idempotency_key"]
    assert all(v.description for v in details["BadRequest"].field_violations)
    assert server.count() == 0


def test_a_refused_request_does_not_burn_its_key(stub: PaymentServiceStub) -> None:
    key = f"key-{uuid.uuid4()}"
    with pytest.raises(grpc.RpcError):
        stub.RequestPayment(payment_request(idempotency_key=key, currency="XXX"))
    created = stub.RequestPayment(payment_request(idempotency_key=key))
    assert created.message == "Payment created"


def test_unknown_payment_is_not_found(stub: PaymentServiceStub) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetPayment(payments_pb2.GetPaymentRequest(payment_id=missing))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing in (caught.value.details() or "")
    assert error_details(caught.value)["ErrorInfo"].reason == "PAYMENT_NOT_FOUND"


@pytest.mark.parametrize(
    "payment_id", ["", "not-a-uuid", "1" * 5000], ids=["empty", "word", "huge"]
)
def test_malformed_payment_id_is_invalid_argument(
    stub: PaymentServiceStub, payment_id: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetPayment(payments_pb2.GetPaymentRequest(payment_id=payment_id))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = error_details(caught.value)["BadRequest"].field_violations
    assert [v.field for v in violations] == ["payment_id"]


def test_health_rpc_says_serving(stub: PaymentServiceStub) -> None:
    assert stub.Health(payments_pb2.HealthRequest()).status == "SERVING"


def test_standard_health_service_tracks_the_lifecycle(server_factory: Any) -> None:
    app = server_factory()
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "payments.v1.PaymentService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        app.enter_graceful_shutdown()  # what stop() does first
        for service in ("", "payments.v1.PaymentService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = PaymentServiceStub(channel)
        assert stub.Health(payments_pb2.HealthRequest()).status == "NOT_SERVING"


def test_concurrent_identical_requests_make_exactly_one_payment(
    stub: PaymentServiceStub, server: RunningServer
) -> None:
    request = payment_request()
    callers = 64
    barrier = threading.Barrier(callers)

    def call(_: int) -> str:
        barrier.wait(timeout=10)
        return stub.RequestPayment(request).payment_id

    with ThreadPoolExecutor(max_workers=callers) as pool:
        payment_ids = list(pool.map(call, range(callers)))

    assert len(payment_ids) == callers
    assert len(set(payment_ids)) == 1
    assert server.count() == 1


class _ExplodingRepository(InMemoryPaymentRepository):
    """A store with a bug: stands in for any unexpected exception inside a handler."""

    async def add_if_absent(self, _payment: Payment) -> Payment:
        raise RuntimeError("boom: secret-internal-detail")


def test_unexpected_errors_are_internal_with_a_generic_message(
    server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = server_factory(repository=_ExplodingRepository())
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = PaymentServiceStub(channel)
        with (
            caplog.at_level(logging.ERROR),
            pytest.raises(grpc.RpcError) as caught,
        ):
            stub.RequestPayment(payment_request())
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    details = caught.value.details()
    assert details is not None
    assert "secret-internal-detail" not in details
    assert "secret-internal-detail" in caplog.text
