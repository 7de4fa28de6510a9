"""Limits and overload: message size, concurrency cap, deadlines, connection age, keepalive."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments_service.payments_pb2_grpc import PaymentServiceStub
from tests.support.network import free_port
from tests.support.repositories import GatedRepository
from tests.support.requests import valid_request
from tests.support.servers import RunningServer, ServerFactory, make_settings


def _stub(app: RunningServer, options: list[tuple[str, int]] | None = None) -> PaymentServiceStub:
    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}", options=options or [])
    return PaymentServiceStub(channel)


def test_a_request_over_the_size_limit_is_refused_and_nothing_is_stored(
    server_factory: ServerFactory,
) -> None:
    app = server_factory(make_settings(port=free_port(), max_receive_message_bytes=4096))
    stub = _stub(app)
    oversized = valid_request(metadata={"note": "x" * 5000})
    assert oversized.ByteSize() > 4096

    with pytest.raises(grpc.RpcError) as refused:
        stub.RequestPayment(oversized)

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert app.count() == 0
    stub.RequestPayment(valid_request(metadata={"note": "x" * 400}))
    assert app.count() == 1


def test_the_default_size_limit_is_64_kib(server: RunningServer) -> None:
    stub = _stub(server)
    oversized = valid_request(metadata={f"k{i}": "v" * 500 for i in range(140)})
    assert oversized.ByteSize() > 64 * 1024

    with pytest.raises(grpc.RpcError) as refused:
        stub.RequestPayment(oversized)

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.count() == 0


def test_calls_past_the_concurrency_cap_are_refused_not_queued(
    server_factory: ServerFactory,
) -> None:
    app = server_factory(
        make_settings(port=free_port(), max_workers=4, max_concurrent_rpcs=2),
        repository=GatedRepository,
    )
    repository = app.app.repository
    assert isinstance(repository, GatedRepository)
    stub = _stub(app)
    held = [stub.RequestPayment.future(valid_request()) for _ in range(2)]
    repository.wait_entered(2)

    with pytest.raises(grpc.RpcError) as refused:
        stub.RequestPayment(valid_request(), timeout=10)

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    repository.open()
    for call in held:
        call.result(timeout=10)
    assert app.count() == 2
    stub.RequestPayment(valid_request(), timeout=10)  # capacity is back once calls finish
    assert app.count() == 3


def _check(port: int, service: str = "", timeout: float = 2.0) -> int:
    """One probe as the kubelet sends it (fresh plaintext connection, timeoutSeconds 2)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return int(answer.status)


#: A saturated API port: its only slot held (the cap), or its only worker (MAX_WORKERS).
SATURATED = {
    "concurrency cap": {"max_workers": 4, "max_concurrent_rpcs": 1},
    "workers": {"max_workers": 1, "max_concurrent_rpcs": 0},
}


@pytest.mark.parametrize("limits", list(SATURATED.values()), ids=list(SATURATED))
def test_probes_pass_on_both_ports_while_the_api_is_saturated(
    server_factory: ServerFactory, limits: dict[str, int]
) -> None:
    """A burst of calls must not fail the kubelet's probes (it would restart a healthy pod):
    health checks take no worker and are never refused by the cap, on either port."""
    app = server_factory(
        make_settings(port=free_port(), health_port=free_port(), **limits),
        repository=GatedRepository,
    )
    repository = app.app.repository
    assert isinstance(repository, GatedRepository)
    assert app.health_port is not None
    held = _stub(app).RequestPayment.future(valid_request())
    repository.wait_entered(1)  # the API's only slot is now held by a blocked call
    try:
        with pytest.raises(grpc.RpcError) as refused:  # the API itself is full ...
            _stub(app).RequestPayment(valid_request(), timeout=0.5)
        assert refused.value.code() in {
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        }
        for port in (app.port, app.health_port):  # ... but every probe is answered
            for service in ("", "payments.v1.PaymentService"):  # liveness/startup, readiness
                assert _check(port, service) == health_pb2.HealthCheckResponse.SERVING
    finally:
        repository.open()
    held.result(timeout=10)


def test_a_call_whose_deadline_passed_while_queued_does_no_work(
    server_factory: ServerFactory,
) -> None:
    app = server_factory(make_settings(port=free_port(), max_workers=1), repository=GatedRepository)
    repository = app.app.repository
    assert isinstance(repository, GatedRepository)
    stub = _stub(app)
    blocker = stub.RequestPayment.future(valid_request())
    repository.wait_entered(1)  # the only worker slot is now busy

    with pytest.raises(grpc.RpcError) as expired:
        stub.RequestPayment(valid_request("late-key-0001"), timeout=0.3)

    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    repository.open()
    blocker.result(timeout=10)
    # The slot is free again; a call after the expired one proves the queue drained.
    stub.RequestPayment(valid_request(), timeout=10)
    assert app.count() == 2, "the expired call must not have stored a payment"


def test_a_retry_after_deadline_exceeded_yields_exactly_one_payment(
    server_factory: ServerFactory,
) -> None:
    app = server_factory(make_settings(port=free_port()), repository=GatedRepository)
    repository = app.app.repository
    assert isinstance(repository, GatedRepository)
    stub = _stub(app)
    request = valid_request("retry-after-deadline-1")
    timed_out = threading.Event()

    def release_after_timeout() -> None:
        timed_out.wait(timeout=10)
        repository.open()

    releaser = threading.Thread(target=release_after_timeout)
    releaser.start()
    with pytest.raises(grpc.RpcError) as expired:
        stub.RequestPayment(request, timeout=0.3)  # the server is still working on it
    timed_out.set()
    releaser.join()

    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    first = stub.RequestPayment(request, timeout=10)
    second = stub.RequestPayment(request, timeout=10)
    assert first.payment_id == second.payment_id
    assert app.count() == 1


def _wait_for_state(
    channel: grpc.Channel, wanted: grpc.ChannelConnectivity, timeout: float
) -> bool:
    seen = threading.Event()

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state == wanted:
            seen.set()

    channel.subscribe(watch)
    try:
        return seen.wait(timeout)
    finally:
        channel.unsubscribe(watch)


def test_connections_are_closed_after_the_maximum_age_and_clients_reconnect(
    server_factory: ServerFactory,
) -> None:
    app = server_factory(
        make_settings(
            port=free_port(), max_connection_age_seconds=1, max_connection_age_grace_seconds=1
        )
    )
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = PaymentServiceStub(channel)
        stub.RequestPayment(valid_request(), timeout=10)

        # The server's GOAWAY at the maximum age drops the connection (channel goes IDLE).
        assert _wait_for_state(channel, grpc.ChannelConnectivity.IDLE, timeout=15)
        stub.RequestPayment(valid_request(), timeout=10)  # and the client simply reconnects
    assert app.count() == 2


def test_a_client_pinging_too_often_is_sent_away(server: RunningServer) -> None:
    abusive = [
        ("grpc.keepalive_time_ms", 100),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=abusive) as channel:
        stub = PaymentServiceStub(channel)
        stub.RequestPayment(valid_request(), timeout=10)
        # Keepalive enforcement: after a few pings the server answers GOAWAY too_many_pings.
        assert _wait_for_state(channel, grpc.ChannelConnectivity.IDLE, timeout=15)
