"""Telemetry settings: samplers, resource, a bad sampler is a configuration error (no I/O)."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from payments_service.config import ConfigurationError, load_settings
from payments_service.observability.logging import JsonFormatter
from payments_service.observability.telemetry import Telemetry
from payments_service.observability.tracing import (
    build_resource,
    build_sampler,
    build_tracing,
)
from payments_service.server import main
from tests.support.servers import make_settings


def test_unknown_sampler_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sample_everything_please")
    with pytest.raises(ConfigurationError, match="OTEL_TRACES_SAMPLER='sample_everything_please'"):
        load_settings()


def test_main_exits_2_with_one_line_for_an_unknown_sampler(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "bogus")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "OTEL_TRACES_SAMPLER='bogus'" in err


def test_sampler_ratio_out_of_range_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1.5")
    with pytest.raises(ConfigurationError, match="OTEL_TRACES_SAMPLER_ARG"):
        load_settings()


def test_samplers_follow_the_standard_names() -> None:
    sampler = build_sampler(
        make_settings(otel_traces_sampler="ParentBased_TraceIdRatio", otel_traces_sampler_arg=0.25)
    )
    assert isinstance(sampler, ParentBased)
    assert "TraceIdRatioBased{0.25}" in sampler.get_description()
    assert isinstance(
        build_sampler(make_settings(otel_traces_sampler="traceidratio")), TraceIdRatioBased
    )


def test_resource_attributes_from_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=payments-0,k8s.namespace.name=shop"
    )
    attributes = build_resource(make_settings()).attributes
    assert attributes["service.name"] == "payments-service"
    assert attributes["k8s.pod.name"] == "payments-0"
    assert attributes["k8s.namespace.name"] == "shop"
    named = build_resource(make_settings(otel_service_name="payments-eu")).attributes
    assert named["service.name"] == "payments-eu"


@pytest.mark.parametrize(
    ("settings", "recorded"),
    [
        ({}, False),  # the default: the otlp exporter, but no endpoint
        ({"otel_traces_exporter": "none", "otel_exporter_otlp_endpoint": "http://x:4317"}, False),
        ({"otel_exporter_otlp_endpoint": "http://127.0.0.1:4317"}, True),
        ({"otel_traces_exporter": "console"}, True),
    ],
)
def test_spans_are_made_only_when_an_exporter_will_receive_them(
    settings: dict[str, str], recorded: bool
) -> None:
    """A span nobody receives would cost about half a bare call: without an exporter there
    is no tracer at all (access-log lines still carry a trace id, see test_tracing)."""
    tracing = build_tracing(make_settings(**settings))
    assert (tracing is not None) is recorded
    if tracing is not None:
        assert tracing.provider.get_tracer("test").start_span("call").is_recording()
        tracing.provider.shutdown()  # the span was never ended, so nothing is exported


def test_json_log_lines_carry_trace_and_span_ids_inside_a_span() -> None:
    provider = TracerProvider(shutdown_on_exit=False)  # records every span, exports none
    tracer = provider.get_tracer("test")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    formatter = JsonFormatter()
    assert "trace_id" not in json.loads(formatter.format(record))
    with tracer.start_as_current_span("call") as span:
        entry = json.loads(formatter.format(record))
    context = span.get_span_context()
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert entry["message"] == "hello world"
    provider.shutdown()


async def test_sdk_disabled_and_metrics_port_0_turn_each_signal_off() -> None:
    method = "/payments.v1.PaymentService/RequestPayment"
    telemetry = Telemetry(make_settings(otel_sdk_disabled=True, metrics_port=0))
    assert telemetry.tracer_provider is None
    assert telemetry.registry is None
    assert telemetry.metrics_port is None
    quiet = telemetry.calls.for_method(method)
    assert quiet.metrics is None
    assert quiet.started(None)[1:] == (None, None)  # no span
    on = Telemetry(make_settings(metrics_port=9999, otel_traces_exporter="console"))
    assert on.tracer_provider is not None
    assert on.calls.for_method(method).metrics is not None
    await on.shutdown()
