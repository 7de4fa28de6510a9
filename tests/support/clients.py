"""The well-behaved clients of the attack tests: what a user, a kubelet or Prometheus does.

Each returns the outcome as a name (``OK``/``SERVING``, or the gRPC code's name) rather
than raising, so a test can compare the whole list with what must hold and show it all.
"""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments_service import payments_pb2, payments_pb2_grpc
from tests.support.requests import valid_request

LOOPBACK = "127.0.0.1"


def health(
    target: str,
    service: str = "",
    timeout: float = 2.0,
    options: list[tuple[str, Any]] | None = None,
) -> str:
    """The status name a grpc.health.v1 Check on ``target`` answers (``SERVING``, ...), or
    the gRPC code's name when the call failed."""
    with grpc.insecure_channel(target, options=options or []) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def probe(port: int, service: str = "", timeout: float = 1.0) -> str:
    """A health Check as the kubelet makes it (a fresh connection each time).

    grpcio shares connections between channels to one address; the kubelet, another
    process, never shares the attacker's: hence a subchannel pool of the probe's own.
    """
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    return health(f"{LOOPBACK}:{port}", service, timeout, options=own_connection)


def probes(port: int, count: int, timeout: float = 1.0) -> list[str]:
    """``count`` probes at once, alternating liveness ("") and readiness (the API)."""
    services = ["", "payments.v1.PaymentService"] * count
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda s: probe(port, s, timeout), services[:count]))


def _outcome(call: grpc.Future[Any]) -> str:
    try:
        call.result()
    except grpc.RpcError as error:
        return str(error.code().name)
    return "OK"


def outcome_of_payment(channel: grpc.Channel, timeout: float = 2.0) -> str:
    """One RequestPayment call with a fresh key on ``channel``."""
    stub = payments_pb2_grpc.PaymentServiceStub(channel)
    return _outcome(stub.RequestPayment.future(valid_request(), timeout=timeout))


def payment_after_wait(port: int, within: float) -> tuple[str, float]:
    """One RequestPayment call that waits (up to ``within`` s) for the server to take its
    connection: the outcome, and the time.monotonic() at which it came."""
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        call = stub.RequestPayment.future(valid_request(), timeout=within, wait_for_ready=True)
        return _outcome(call), time.monotonic()


def payment_calls(port: int, count: int, timeout: float = 2.0) -> list[str]:
    """``count`` RequestPayment calls at once from a stock grpcio client, fresh keys."""
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        calls = [stub.RequestPayment.future(valid_request(), timeout=timeout) for _ in range(count)]
        return [_outcome(call) for call in calls]


def health_calls(port: int, count: int, timeout: float = 2.0) -> list[str]:
    """``count`` PaymentService/Health calls at once."""
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        request = payments_pb2.HealthRequest()
        calls = [stub.Health.future(request, timeout=timeout) for _ in range(count)]
        return [_outcome(call) for call in calls]


def get_metrics(port: int, timeout: float = 2.0) -> str:
    """GET /metrics: ``OK`` when it answers 200 with the service's metrics, else why not."""
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=timeout) as answer:
            body = answer.read().decode()
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    return "OK" if "grpc_server_started" in body else f"unexpected body {body[:200]!r}"
