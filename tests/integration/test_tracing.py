"""Traces over the wire: a real server exports to a real OTLP/gRPC receiver (what Jaeger runs).

One module-scoped scenario makes a known mix of calls; each test checks one promise.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from payments_service import __version__, payments_pb2, payments_pb2_grpc
from payments_service.observability.logging import JsonFormatter
from tests.support.otlp_receiver import ReceivedSpan, running_receiver
from tests.support.repositories import FaultyRepository
from tests.support.requests import valid_request
from tests.support.servers import make_settings, running_server

SERVICE = "payments.v1.PaymentService"
PARENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


@dataclass
class Scenario:
    spans: list[ReceivedSpan]
    codes: dict[str, grpc.StatusCode]  # label of the call -> code the client received
    log_lines: list[dict[str, object]]


def _request(
    key: str, amount: int = 1250, currency: str = "EUR"
) -> payments_pb2.RequestPaymentRequest:
    return valid_request(
        key,
        amount_minor=amount,
        currency=currency,
        order_id="order-1",
        metadata={"customer_note": "secret-value-123"},
    )


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    log_stream = io.StringIO()
    handler = logging.StreamHandler(log_stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("payments_service.access")
    access.addHandler(handler)
    previous_level = access.level
    access.setLevel(logging.DEBUG)  # every line, whatever its level
    codes: dict[str, grpc.StatusCode] = {}
    try:
        with running_receiver() as (receiver, receiver_port):
            settings = make_settings(
                otel_exporter_otlp_endpoint=f"http://127.0.0.1:{receiver_port}"
            )
            with (
                running_server(settings, repository=FaultyRepository) as app,
                grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel,
            ):
                stub = payments_pb2_grpc.PaymentServiceStub(channel)
                calls: dict[str, Callable[[], object]] = {
                    "created": lambda: stub.RequestPayment(
                        _request("key-00000001"),
                        metadata=(("traceparent", f"00-{PARENT_TRACE_ID}-{PARENT_SPAN_ID}-01"),),
                    ),
                    "replayed": lambda: stub.RequestPayment(_request("key-00000001")),
                    "conflict": lambda: stub.RequestPayment(_request("key-00000001", 999)),
                    "invalid": lambda: stub.RequestPayment(_request("short", -5, "XXX")),
                    "not_found": lambda: stub.GetPayment(
                        payments_pb2.GetPaymentRequest(
                            payment_id="550e8400-e29b-41d4-a716-446655440000"
                        )
                    ),
                    "crash": lambda: stub.RequestPayment(_request("crash-00000001")),
                    "down": lambda: stub.RequestPayment(_request("down-00000001")),
                }
                for label, call in calls.items():
                    try:
                        call()
                        codes[label] = grpc.StatusCode.OK
                    except grpc.RpcError as error:
                        codes[label] = error.code()
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            # Leaving running_server stopped the server, which flushed the spans.
            spans = receiver.spans()
    finally:
        access.removeHandler(handler)
        access.setLevel(previous_level)
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    return Scenario(spans=spans, codes=codes, log_lines=lines)


def _server_spans(scenario: Scenario) -> list[ReceivedSpan]:
    return [s for s in scenario.spans if s.span.kind == trace_pb2.Span.SPAN_KIND_SERVER]


def _span_of(scenario: Scenario, label: str) -> ReceivedSpan:
    """The server span of the call made ``label``-th (calls were made in order)."""
    order = list(scenario.codes)
    return sorted(_server_spans(scenario), key=lambda s: s.span.start_time_unix_nano)[
        order.index(label)
    ]


def test_clients_received_the_expected_codes(scenario: Scenario) -> None:
    assert scenario.codes == {
        "created": grpc.StatusCode.OK,
        "replayed": grpc.StatusCode.OK,
        "conflict": grpc.StatusCode.FAILED_PRECONDITION,
        "invalid": grpc.StatusCode.INVALID_ARGUMENT,
        "not_found": grpc.StatusCode.NOT_FOUND,
        "crash": grpc.StatusCode.INTERNAL,
        "down": grpc.StatusCode.UNAVAILABLE,
    }


def test_every_call_has_one_server_span_and_health_checks_none(scenario: Scenario) -> None:
    names = [s.name for s in _server_spans(scenario)]
    assert sorted(names) == sorted([f"{SERVICE}/RequestPayment"] * 6 + [f"{SERVICE}/GetPayment"]), (
        names
    )
    assert not any("grpc.health" in s.name for s in scenario.spans)


def test_resource_names_the_service(scenario: Scenario) -> None:
    resource = scenario.spans[0].resource
    assert resource["service.name"] == "payments-service"
    assert resource["service.version"] == __version__
    assert len(resource["service.instance.id"]) == 36


def test_span_status_matches_what_the_client_received(scenario: Scenario) -> None:
    server_faults = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE}
    for label, code in scenario.codes.items():
        span = _span_of(scenario, label)
        assert span.attributes["rpc.grpc.status_code"] == code.value[0], label
        expected = (
            trace_pb2.Status.STATUS_CODE_ERROR
            if code in server_faults
            else trace_pb2.Status.STATUS_CODE_UNSET
        )
        assert span.span.status.code == expected, (label, span.span.status)
        assert span.attributes["rpc.system"] == "grpc"
        assert span.attributes["rpc.service"] == SERVICE


def test_incoming_traceparent_becomes_the_parent(scenario: Scenario) -> None:
    created = _span_of(scenario, "created")
    assert created.trace_id == PARENT_TRACE_ID
    assert created.parent_span_id == PARENT_SPAN_ID
    assert _span_of(scenario, "replayed").trace_id != PARENT_TRACE_ID


def test_outcome_is_on_the_server_span_with_bounded_attributes(scenario: Scenario) -> None:
    created = _span_of(scenario, "created")
    # The in-memory steps take microseconds: they get no spans of their own, so a
    # RequestPayment is one span (the PostgreSQL store adds its query spans).
    assert [s.name for s in scenario.spans if s.trace_id == created.trace_id] == [created.name]
    assert created.attributes["payments.outcome"] == "created"
    assert created.attributes["payments.currency"] == "EUR"
    assert created.attributes["payments.amount_minor"] == 1250
    outcomes = {
        label: _span_of(scenario, label).attributes.get("payments.outcome")
        for label in ("replayed", "conflict", "invalid")
    }
    assert outcomes == {"replayed": "replayed", "conflict": "conflict", "invalid": "invalid"}
    # A currency nobody supports is not echoed: it would be an unbounded, customer-typed value.
    assert _span_of(scenario, "invalid").attributes["payments.currency"] == "other"
    everything = repr([(s.span.attributes, s.span.events) for s in scenario.spans])
    assert "secret-value-123" not in everything
    assert "key-00000001" not in everything
    assert "order-1" not in everything


def test_unexpected_error_is_recorded_on_the_span(scenario: Scenario) -> None:
    crash = _span_of(scenario, "crash")
    events = [e for e in crash.span.events if e.name == "exception"]
    assert any(
        a.key == "exception.type" and a.value.string_value == "RuntimeError"
        for e in events
        for a in e.attributes
    ), crash.span.events


def test_access_log_lines_are_json_with_the_trace_id_of_their_call(scenario: Scenario) -> None:
    payment_lines = [
        line for line in scenario.log_lines if str(line["grpc_method"]).startswith(f"/{SERVICE}/")
    ]
    assert len(payment_lines) == len(scenario.codes)
    spans_by_trace = {s.trace_id: s for s in _server_spans(scenario)}
    for line, (label, code) in zip(payment_lines, scenario.codes.items(), strict=True):
        assert line["logger"] == "payments_service.access"
        assert line["grpc_code"] == code.name, label
        # Failed calls at INFO; fast successful ones only at DEBUG (the metrics count them).
        assert line["level"] == ("DEBUG" if code is grpc.StatusCode.OK else "INFO"), label
        assert isinstance(line["duration_ms"], float)
        assert str(line["peer"]).startswith("ipv4:127.0.0.1:")
        span = spans_by_trace[str(line["trace_id"])]
        assert span.span_id == line["span_id"], label
    assert "secret-value-123" not in repr(scenario.log_lines)
