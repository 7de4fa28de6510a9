"""Tracing: an OpenTelemetry SDK TracerProvider built from Settings, exporting over OTLP/gRPC."""

from __future__ import annotations

import logging
import uuid

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, Status, StatusCode

from payments_service import __version__
from payments_service.config import Settings

logger = logging.getLogger(__name__)

#: Codes that mean the server failed; a span ending with one of them is an error.
#: Client faults (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ...) are not.
SERVER_FAULT_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

#: Services that get no spans: probes and grpcurl's discovery would drown the real calls.
UNTRACED_METHOD_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


def build_sampler(settings: Settings) -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER(_ARG) name (validated by Settings already)."""
    ratio = 1.0 if settings.otel_traces_sampler_arg is None else settings.otel_traces_sampler_arg
    samplers: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(TraceIdRatioBased(ratio)),
    }
    return samplers[settings.otel_traces_sampler]


def build_resource(settings: Settings) -> Resource:
    """service.name/version/instance.id, overridden by OTEL_RESOURCE_ATTRIBUTES and
    OTEL_SERVICE_NAME (Kubernetes passes the pod name and namespace that way)."""
    defaults = Resource(
        {
            SERVICE_NAME: settings.otel_service_name,
            SERVICE_VERSION: __version__,
            SERVICE_INSTANCE_ID: str(uuid.uuid4()),
        }
    )
    explicit = (
        {SERVICE_NAME: settings.otel_service_name}
        if "otel_service_name" in settings.model_fields_set
        else {}
    )
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES; "unknown_service" is its placeholder.
    from_environment = Resource.create(explicit)
    if str(from_environment.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        from_environment = Resource(
            {k: v for k, v in from_environment.attributes.items() if k != SERVICE_NAME}
        )
    return defaults.merge(from_environment)


def build_tracer_provider(settings: Settings) -> TracerProvider | None:
    """A TracerProvider, or None when OTEL_SDK_DISABLED=true.

    Spans are exported in batches over OTLP/gRPC when an OTLP endpoint is configured. With
    none, nothing would ever read a span, so none is recorded (recording one costs about as
    much as a bare call): every call still gets a trace id for its log lines (the caller's,
    when it sent a traceparent), and no errors are logged.
    """
    if settings.otel_sdk_disabled:
        logger.info("Tracing disabled (OTEL_SDK_DISABLED=true)")
        return None
    endpoint = settings.otel_exporter_otlp_traces_endpoint or settings.otel_exporter_otlp_endpoint
    provider = TracerProvider(
        sampler=build_sampler(settings) if endpoint else ALWAYS_OFF,
        resource=build_resource(settings),
        shutdown_on_exit=False,  # the server flushes it after the gRPC server stopped
    )
    if endpoint:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        logger.info("Exporting traces over OTLP/gRPC to %s", endpoint)
    else:
        logger.info("No OTLP endpoint configured: spans are neither recorded nor exported")
    return provider


def tracing_interceptor(provider: TracerProvider) -> grpc.ServerInterceptor:  # type: ignore[type-arg]
    """OpenTelemetry's server interceptor, leaving health checks and reflection out.

    It starts the server span and takes the parent from an incoming W3C traceparent. The
    span's final name, status code and status are set by the call interceptor, which sees
    every way a call ends (the stock one misses abort_with_status and uncaught errors).
    """

    def traced(details: grpc.HandlerCallDetails) -> bool:
        # One str.startswith per call: the stock filters split and normalise the path.
        method: str = details.method
        return not method.startswith(UNTRACED_METHOD_PREFIXES)

    interceptor: grpc.ServerInterceptor = server_interceptor(  # type: ignore[type-arg,no-untyped-call]
        tracer_provider=provider, filter_=traced
    )
    return interceptor


def end_server_span(span: Span, span_name: str, code: grpc.StatusCode) -> None:
    """Make the server span tell the truth about how the call ended."""
    span.update_name(span_name)
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_FAULT_CODES:
        span.set_status(Status(StatusCode.ERROR, code.name))
