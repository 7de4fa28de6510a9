"""Every call is counted exactly once, with the code the client received, however it ends."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from payments_service import payments_pb2_grpc
from tests.support.network import free_port
from tests.support.repositories import FaultyRepository
from tests.support.requests import valid_request
from tests.support.servers import ServerFactory, make_settings

SERVICE = "payments.v1.PaymentService"


def test_each_way_a_call_ends_is_counted_once_with_the_clients_code(
    server_factory: ServerFactory,
) -> None:
    app = server_factory(make_settings(metrics_port=free_port()), repository=FaultyRepository)
    assert app.app.telemetry.registry is not None
    registry = app.app.telemetry.registry
    received: list[grpc.StatusCode] = []
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        raw = channel.unary_unary(
            f"/{SERVICE}/RequestPayment",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        calls: list[Callable[[], object]] = [
            lambda: stub.RequestPayment(valid_request("count-key-1")),
            lambda: stub.RequestPayment(valid_request("crash-key-1")),  # unexpected exception
            lambda: stub.RequestPayment(valid_request("down-key-01")),  # store unavailable
            lambda: raw(b"\xff\xff\xff\xff"),  # undecodable request bytes
        ]
        for call in calls:
            try:
                call()
                received.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                received.append(error.code())
    assert received == [
        grpc.StatusCode.OK,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INVALID_ARGUMENT,
    ]
    labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "RequestPayment"}

    def handled(code: str) -> float | None:
        return registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": code})

    assert handled("OK") == 1
    assert handled("Internal") == 1
    assert handled("Unavailable") == 1
    assert handled("InvalidArgument") == 1
    assert registry.get_sample_value("grpc_server_started_total", labels) == 4
    assert registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 4
    assert registry.get_sample_value("grpc_server_msg_sent_total", labels) == 1
