"""The service's own server span against the one OpenTelemetry's gRPC instrumentation makes.

The service starts its SERVER span itself (observability/tracing.py) instead of running
opentelemetry-instrumentation-grpc's interceptor, which costs more per call. This test
keeps the two honest: the same calls, with and without a caller's traceparent, go to the
service and to the same servicer behind the stock ``aio_server_interceptor``; both export
over OTLP to real receivers, and the spans must agree on name, kind, parent, trace id and
status and every attribute the stock span has. The differences are the documented ones:
the stock span's name starts with the "/" of the gRPC path (the semantic conventions name
it without), and it calls a loopback peer ``net.peer.name=localhost``; the service's span
adds the payment's outcome, currency and amount and the stable ``network.peer.*`` names
beside the older ``net.peer.*``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from payments_service import payments_pb2, payments_pb2_grpc
from payments_service.service import PaymentService
from payments_service.transport.calls import add_guarded
from payments_service.transport.health import HealthService
from payments_service.transport.servicer import SERVICE_NAME, PaymentServicer
from tests.support.otlp_receiver import ReceivedSpan, running_receiver
from tests.support.repositories import FaultyRepository
from tests.support.requests import valid_request
from tests.support.servers import LoopThread, make_settings, running_server

PARENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = (("traceparent", f"00-{PARENT_TRACE_ID}-{PARENT_SPAN_ID}-01"),)
#: The service's additions to the stock span (RequestPayment only).
PAYMENT_ATTRIBUTES = {"payments.outcome", "payments.currency", "payments.amount_minor"}
#: ... and the stable semantic conventions' names of the peer, beside the older net.peer.*.
NETWORK_ATTRIBUTES = {"network.peer.address"}  # and network.peer.port


#: label -> (method, request, invocation metadata)
CALLS: dict[str, tuple[str, Any, tuple[tuple[str, str], ...]]] = {
    "created, child of the caller": (
        "RequestPayment",
        valid_request("parity-key-0001"),
        TRACEPARENT,
    ),
    "created, a root span": ("RequestPayment", valid_request("parity-key-0002"), ()),
    "invalid": ("RequestPayment", valid_request("parity-key-0003", amount_minor=0), ()),
    "not found": (
        "GetPayment",
        payments_pb2.GetPaymentRequest(payment_id="00000000-0000-4000-8000-000000000000"),
        TRACEPARENT,
    ),
    "health": ("Health", payments_pb2.HealthRequest(), ()),
    "store down": ("RequestPayment", valid_request("down-parity-0004"), TRACEPARENT),
}


def _make_calls(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        for method, request, metadata in CALLS.values():
            with suppress(grpc.RpcError):
                getattr(stub, method)(request, metadata=metadata, timeout=5)


@contextmanager
def _stock_server(endpoint: str) -> Iterator[int]:
    """The service's servicer on a plain grpc.aio server with the stock interceptor."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint, insecure=True)))
    loop = LoopThread()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(interceptors=[aio_server_interceptor(tracer_provider=provider)])
        service = PaymentService(FaultyRepository())
        servicer = PaymentServicer(service, HealthService(("", SERVICE_NAME)))
        add_guarded(server, payments_pb2_grpc.add_PaymentServiceServicer_to_server, servicer)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop.run(start())
    try:
        yield port
    finally:
        loop.run(server.stop(0))
        loop.close()
        provider.shutdown()


def _spans_of_each_call(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    """The spans in the order of CALLS (one per call, exported as each call ended)."""
    server_spans = [s for s in spans if s.span.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    server_spans.sort(key=lambda s: s.span.start_time_unix_nano)
    assert len(server_spans) == len(CALLS), [s.name for s in server_spans]
    return dict(zip(CALLS, server_spans, strict=True))


@pytest.fixture(scope="module")
def spans() -> dict[str, tuple[ReceivedSpan, ReceivedSpan]]:
    """label -> (the service's span, the stock interceptor's span)."""
    with ExitStack() as stack:
        ours_receiver, ours_port = stack.enter_context(running_receiver())
        stock_receiver, stock_port = stack.enter_context(running_receiver())
        settings = make_settings(otel_exporter_otlp_endpoint=f"http://127.0.0.1:{ours_port}")
        with running_server(settings, repository=FaultyRepository) as app:
            _make_calls(app.port)
        with _stock_server(f"127.0.0.1:{stock_port}") as port:
            _make_calls(port)
        # Both servers flushed their spans as they stopped.
        ours = _spans_of_each_call(ours_receiver.spans())
        stock = _spans_of_each_call(stock_receiver.spans())
    return {label: (ours[label], stock[label]) for label in CALLS}


@pytest.mark.parametrize("label", CALLS)
def test_the_server_span_matches_the_stock_instrumentation(
    spans: dict[str, tuple[ReceivedSpan, ReceivedSpan]], label: str
) -> None:
    ours, stock = spans[label]
    # The stock span's name keeps the leading "/" of the gRPC path; the semantic
    # conventions name RPC spans "$package.$service/$method", as the service does.
    assert "/" + ours.name == stock.name
    assert ours.span.kind == stock.span.kind == trace_pb2.Span.SPAN_KIND_SERVER
    if CALLS[label][2]:  # the caller's traceparent: both are children of its span
        assert ours.trace_id == stock.trace_id == PARENT_TRACE_ID
        assert ours.parent_span_id == stock.parent_span_id == PARENT_SPAN_ID
    else:
        assert ours.parent_span_id == stock.parent_span_id == ""
    ports = {"net.peer.port", "network.peer.port"}  # each client's own ephemeral port
    left_out = {*ports, "net.peer.name"}
    stock_attributes = {k: v for k, v in stock.attributes.items() if k not in left_out}
    our_attributes = {k: v for k, v in ours.attributes.items() if k not in ports}
    assert ports <= ours.attributes.keys()
    extra = set(NETWORK_ATTRIBUTES)
    if CALLS[label][0] == "RequestPayment" and label != "store down":  # it has an outcome
        extra |= PAYMENT_ATTRIBUTES
    assert our_attributes.keys() - stock_attributes.keys() == extra
    assert {k: our_attributes[k] for k in stock_attributes} == stock_attributes
    assert our_attributes["network.peer.address"] == stock_attributes["net.peer.ip"]
    assert ours.span.status.code == stock.span.status.code


def test_only_server_faults_mark_the_span_as_an_error(
    spans: dict[str, tuple[ReceivedSpan, ReceivedSpan]],
) -> None:
    """As the semantic conventions for RPC servers say (and the stock span does)."""
    error = {label for label, (ours, _) in spans.items() if ours.span.status.code}
    assert error == {"store down"}
    assert spans["store down"][0].span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
