"""Secrets and personal data never leave the process through logs, spans, metrics or errors.

A real server process (PostgreSQL store, DEBUG logs in JSON, every span exported, metrics
on) handles calls that carry marker values; then all four outputs are searched for them.
"""

from __future__ import annotations

import signal
import urllib.request

import grpc
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from payments_service import payments_pb2, payments_pb2_grpc
from tests.support.network import free_port, wait_for_port
from tests.support.otlp_receiver import running_receiver
from tests.support.postgres import replica_env
from tests.support.processes import start_server_process, stop_process, wait_until_ready
from tests.support.requests import valid_request

pytestmark = pytest.mark.postgres

#: Values a customer or operator would not want to see anywhere but in the database.
DATABASE_SECRET = "Db-Passw0rd-Marker-5d1c"  # noqa: S105 (a marker to search for, not a credential)
IDEMPOTENCY_KEY = "idem-key-marker-3b7e"
METADATA_KEY = "holder-marker-k9"
METADATA_VALUE = "Jane Marker-Doe 4111"
REUSED_VALUE = "other-marker-value-8a2f"
MARKERS = (DATABASE_SECRET, IDEMPOTENCY_KEY, METADATA_KEY, METADATA_VALUE, REUSED_VALUE)


def _calls(stub: payments_pb2_grpc.PaymentServiceStub, errors: list[str]) -> None:
    """Every path a marker can take: create, replay, reuse, invalid, undecodable, lookups."""
    stored = valid_request(IDEMPOTENCY_KEY, metadata={METADATA_KEY: METADATA_VALUE})
    created = stub.RequestPayment(stored)
    stub.RequestPayment(stored)  # replay
    stub.GetPayment(payments_pb2.GetPaymentRequest(payment_id=created.payment_id))
    failing = [
        # FAILED_PRECONDITION
        valid_request(IDEMPOTENCY_KEY, metadata={METADATA_KEY: REUSED_VALUE}),
        # invalid
        valid_request(IDEMPOTENCY_KEY + "\x07", metadata={METADATA_KEY: METADATA_VALUE * 30}),
        # invalid key and meta key
        valid_request("short", metadata={METADATA_KEY * 5: METADATA_VALUE}),
    ]
    for request in failing:
        try:
            stub.RequestPayment(request)
        except grpc.RpcError as error:
            errors.append(f"{error.code()} {error.details()} {error.trailing_metadata()}")
        else:
            pytest.fail("the request should have been refused")
    for payment_id in (IDEMPOTENCY_KEY, "00000000-0000-4000-8000-000000000000"):
        try:
            stub.GetPayment(payments_pb2.GetPaymentRequest(payment_id=payment_id))
        except grpc.RpcError as error:
            errors.append(f"{error.code()} {error.details()} {error.trailing_metadata()}")


@pytest.fixture
def url_with_password(database_url: str) -> str:
    """The test database's URL with a password in it (trust auth ignores it)."""
    return make_conninfo(database_url, password=DATABASE_SECRET)


def test_markers_appear_in_no_log_span_metric_or_error_message(url_with_password: str) -> None:
    port, metrics_port = free_port(), free_port()
    errors: list[str] = []
    with running_receiver() as (receiver, receiver_port):
        env = replica_env(
            url_with_password,
            port,
            LOG_LEVEL="DEBUG",
            LOG_FORMAT="json",
            METRICS_PORT=str(metrics_port),
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver_port}",
            OTEL_TRACES_SAMPLER="always_on",
        )
        process = start_server_process(env)
        try:
            wait_until_ready(port)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                _calls(payments_pb2_grpc.PaymentServiceStub(channel), errors)
                undecodable = channel.unary_unary(
                    "/payments.v1.PaymentService/RequestPayment", None, None
                )
                with pytest.raises(grpc.RpcError) as raised:
                    undecodable(b"\x0a\x05" + METADATA_VALUE.encode()[:3] + b"\xff", timeout=5)
                errors.append(str(raised.value.details()))
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as answer:
                metrics = answer.read().decode()
        finally:
            logs = stop_process(process, signal.SIGTERM)
        spans = "\n".join(str(span.span) for span in receiver.spans())

    assert process.returncode == 0, logs
    assert len(errors) == 6
    assert spans
    assert metrics
    assert logs
    assert conninfo_to_dict(url_with_password)["password"] == DATABASE_SECRET
    outputs = {"logs": logs, "spans": spans, "metrics": metrics, "errors": "\n".join(errors)}
    leaks = {
        (name, marker) for name, text in outputs.items() for marker in MARKERS if marker in text
    }
    assert leaks == set()


def test_a_database_that_refuses_us_is_reported_without_the_url_password() -> None:
    port = free_port()
    closed = free_port()  # nothing listens there
    url = f"postgresql://payments:{DATABASE_SECRET}@127.0.0.1:{closed}/payments"
    process = start_server_process(
        replica_env(url, port, LOG_LEVEL="DEBUG", DATABASE_TIMEOUT_SECONDS="1")
    )
    try:
        wait_for_port(port, timeout=30)  # started (a busy machine may take a while) ...
        with pytest.raises(TimeoutError):  # ... but never ready
            wait_until_ready(port, timeout=3)
    finally:
        logs = stop_process(process, signal.SIGTERM)
    assert "127.0.0.1" in logs or "database" in logs.lower(), logs  # it did report trouble
    assert DATABASE_SECRET not in logs
