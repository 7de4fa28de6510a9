"""The direct OTLP encoder writes the very message the stock encoder builds, and the stock
exporter still takes each request from ``_translate_data``: if a release of
opentelemetry-exporter-otlp changes either, these tests fail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as stock_encode_spans,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from payments_service.observability.otlp import OTLPSpanExporter, encode_spans
from tests.support.otlp_receiver import running_receiver

RESOURCE = Resource({"service.name": "payments-service", "service.version": "1.0", "n": 3})


@pytest.fixture
def recorded() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


def _same_message(spans: tuple[ReadableSpan, ...]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert ours == stock_encode_spans(spans)


def test_every_kind_of_span_the_service_makes_encodes_as_the_stock_encoder(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = recorded
    server = provider.get_tracer("payments_service", "0.1.0")
    store = provider.get_tracer(
        "payments_service.storage.postgres", schema_url="https://opentelemetry.io/schemas/1.11.0"
    )
    remote = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value"), ("other", "x")]),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    with server.start_as_current_span(
        "payments.v1.PaymentService/RequestPayment",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.grpc.status_code": 0, "net.peer.port": "5"},
    ) as span:
        span.set_attributes({"payments.amount_minor": 99_999_999_999, "ratio": 0.25})
        span.set_attribute("flag", False)
        span.set_attribute("list", ["a", "ünïcode ✓", ""])
        span.set_attribute("numbers", [1, -2, 3])
        span.record_exception(RuntimeError("boom"))
        span.set_status(Status(StatusCode.ERROR, "INTERNAL"))
        with store.start_as_current_span("INSERT payments", kind=SpanKind.CLIENT) as query:
            query.set_attribute("db.query.text", "INSERT INTO payments ...")
    root = server.start_span("root", context=context.Context())
    root.set_status(StatusCode.OK)
    root.end()
    _same_message(memory.get_finished_spans())


scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
)
attribute_values = st.one_of(scalars, st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=200, deadline=None)
@given(attributes=st.dictionaries(st.text(min_size=1, max_size=10), attribute_values, max_size=6))
def test_any_attributes_encode_as_the_stock_encoder(attributes: dict[str, Any]) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    span = provider.get_tracer("t").start_span("call", attributes=attributes)
    span.add_event("event", attributes)
    span.end()
    _same_message(memory.get_finished_spans())
    provider.shutdown()


def test_the_stock_exporter_sends_what_translate_data_builds(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = recorded
    provider.get_tracer("payments_service").start_span("call", attributes={"k": "v"}).end()
    spans = memory.get_finished_spans()
    translated: list[int] = []

    class Watched(OTLPSpanExporter):
        def _translate_data(self, data: Any) -> ExportTraceServiceRequest:
            translated.append(len(data))
            return super()._translate_data(data)

    with running_receiver() as (receiver, port):
        exporter = Watched(endpoint=f"http://127.0.0.1:{port}")
        try:
            assert exporter.export(spans).name == "SUCCESS"
        finally:
            exporter.shutdown()
        received = receiver.spans()
    assert translated == [1]  # the exporter asked our encoder, not its own
    assert [s.name for s in received] == ["call"]
    assert received[0].attributes == {"k": "v"}
