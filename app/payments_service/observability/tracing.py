"""Tracing: an OpenTelemetry SDK TracerProvider built from Settings, and the server spans.

Spans are exported in batches over OTLP/gRPC (OTEL_TRACES_EXPORTER=otlp, the default) when
an OTLP endpoint is configured, or printed to stdout (console). With the otlp exporter and
no endpoint, or with none, nothing would ever read a span, so there is no TracerProvider
and no span is made at all; a call's access-log line still carries its trace id (the
caller's, when it sent a traceparent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from payments_service import __version__
from payments_service.config import Settings
from payments_service.observability.otlp import OTLPSpanExporter

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
#: At shutdown, spans still buffered get this long to leave; then the exporter is stopped,
#: within another second (the chart's termination period counts on both: docs/deployment.md).
FLUSH_SECONDS = 2.0
STOP_SECONDS = 1.0


def build_sampler(settings: Settings) -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER(_ARG) name (validated by Settings already)."""
    ratio = settings.otel_traces_sampler_arg
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


@dataclass(frozen=True)
class Tracing:
    """The SDK's TracerProvider (the store's spans, the sampler, ids, the resource) and the
    span processor every span goes to, the server spans too."""

    provider: TracerProvider
    processor: SpanProcessor


def build_tracing(settings: Settings) -> Tracing | None:
    """Tracing, or None when OTEL_SDK_DISABLED=true or no exporter would ever receive a
    span."""
    if settings.otel_sdk_disabled:
        logger.info("Tracing disabled (OTEL_SDK_DISABLED=true)")
        return None
    endpoint = settings.otlp_traces_endpoint
    exporter = settings.otel_traces_exporter
    if exporter == "none" or (exporter == "otlp" and endpoint is None):
        logger.info("No span exporter configured: no span is recorded")
        return None
    provider = TracerProvider(
        sampler=build_sampler(settings),
        resource=build_resource(settings),
        shutdown_on_exit=False,  # the server flushes it after the gRPC server stopped
    )
    processor: SpanProcessor
    if exporter == "console":
        processor = SimpleSpanProcessor(ConsoleSpanExporter())
        logger.info("Printing spans to stdout (OTEL_TRACES_EXPORTER=console)")
    else:
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
        logger.info("Exporting traces over OTLP/gRPC to %s", endpoint)
    provider.add_span_processor(processor)
    return Tracing(provider, processor)


async def shut_down_tracing(provider: TracerProvider) -> None:
    """Export the spans still buffered, within :data:`FLUSH_SECONDS`, then stop.

    The SDK cannot be trusted with a bound: its force_flush ignores its timeout and retries
    an unreachable collector for up to OTEL_EXPORTER_OTLP_TIMEOUT (10 s), and its shutdown
    waits up to 30 s for an export under way before it stops the exporter's retries. So
    both run in a daemon thread that is waited for only so long (and abandoned at exit).
    """
    if not await _bounded(provider.force_flush, FLUSH_SECONDS):
        logger.warning("Spans not exported within %gs at shutdown are dropped", FLUSH_SECONDS)
    await _bounded(provider.shutdown, STOP_SECONDS)


async def _bounded(work: Callable[[], object], seconds: float) -> bool:
    """Run ``work`` in a daemon thread; True if it ended within ``seconds``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            work()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(finish)

    threading.Thread(target=run, name="payments-tracing-stop", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), seconds)
    except TimeoutError:
        return False
    return True


def build_propagator(settings: Settings) -> TextMapPropagator:
    """The trace-context formats OTEL_PROPAGATORS names, read from each call's metadata.

    The OpenTelemetry API logs a WARNING for every malformed tracestate or baggage header,
    that is for every call an attacker cares to send, quoting the header: those two logs
    are raised to ERROR (the headers are then ignored, as the W3C specifications say).
    """
    chosen: list[TextMapPropagator] = []
    for name in settings.propagators:
        if name == "tracecontext":
            logging.getLogger("opentelemetry.trace.span").setLevel(logging.ERROR)  # tracestate
            chosen.append(TraceContextTextMapPropagator())
        elif name == "baggage":
            logging.getLogger("opentelemetry.baggage.propagation").setLevel(logging.ERROR)
            chosen.append(W3CBaggagePropagator())
    return CompositePropagator(chosen)


def _peer_attributes(peer: str) -> dict[str, str | int]:
    """network.peer.* (and the older net.peer.*) of a gRPC peer such as ipv4:1.2.3.4:5."""
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return {}
    host, _, port = unquote(address).rpartition(":")
    if not port.isdigit():
        return {}
    attributes: dict[str, str | int] = {
        "network.peer.address": host.strip("[]"),
        "network.peer.port": int(port),
        "net.peer.ip": host,
        "net.peer.port": port,
    }
    return attributes


def _user_agent(metadata: Sequence[tuple[str, Any]]) -> dict[str, str]:
    """rpc.user_agent, as OpenTelemetry's gRPC instrumentation records it."""
    for key, value in metadata:
        if key == "user-agent":
            return {"rpc.user_agent": value}
    return {}


class _Metadata:
    """The OTel getter for grpc invocation metadata (a sequence of key/value pairs)."""

    @staticmethod
    def get(carrier: Sequence[tuple[str, Any]], key: str) -> list[str] | None:
        values = [v for k, v in carrier if k == key and isinstance(v, str)]
        return values or None

    @staticmethod
    def keys(carrier: Sequence[tuple[str, Any]]) -> list[str]:
        return [k for k, _ in carrier]


def caller_trace_id(metadata: Sequence[tuple[str, Any]]) -> str | None:
    """The trace id of a W3C ``traceparent`` in ``metadata`` (32 hex digits), or None."""
    for key, value in metadata:
        if key == "traceparent" and isinstance(value, str):
            parts = value.split("-")
            if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
                try:
                    int(parts[1], 16)
                except ValueError:
                    return None
                return parts[1].lower()
    return None


_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_NO_CONTEXT = otel_context.Context()


class ServerSpan(Span):
    """The SERVER span of one call: what the SDK's span records, without what it spends
    guarding against code it cannot trust (a lock, limits and a check of every attribute
    value): only the server's own code touches this span, with values it made itself.

    It is sampled by the SDK's sampler and identified by its id generator
    (:class:`ServerSpans`), and when it ends it goes, as a public ``ReadableSpan``, to the
    same span processor and exporter as the SDK's spans (the store's queries).
    """

    __slots__ = (
        "_attributes",
        "_context",
        "_ended",
        "_events",
        "_name",
        "_parent",
        "_spans",
        "_start",
        "_status",
    )

    def __init__(
        self,
        spans: ServerSpans,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
    ) -> None:
        self._spans = spans
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._events: list[Event] = []
        self._status = _UNSET
        self._start = time.time_ns()
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: Any) -> None:
        self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._attributes.update(attributes)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        raise NotImplementedError("server spans carry no links")

    def update_name(self, name: str) -> None:
        self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """The "exception" event with the attributes the SDK's span gives it."""
        kind = type(exception)
        module = kind.__module__
        event: dict[str, Any] = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        event.update(attributes or {})
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        spans = self._spans
        spans.processor.on_end(
            ReadableSpan(
                self._name,
                context=self._context,
                parent=self._parent,
                resource=spans.resource,
                attributes=self._attributes,
                events=tuple(self._events),
                kind=SpanKind.SERVER,
                status=self._status,
                start_time=self._start,
                end_time=end_time or time.time_ns(),
                instrumentation_scope=spans.scope,
            )
        )


class ServerSpans:
    """Starts the SERVER span of each traced call, a child of the caller's traceparent.

    The span is the one OpenTelemetry's gRPC instrumentation makes (name
    ``package.Service/Method``, kind SERVER, rpc.* attributes, the peer), except that its
    status is only ERROR for codes that mean the server failed, as the semantic
    conventions say. A call the sampler drops gets a non-recording span that carries its
    trace id (for the logs) and costs next to nothing.
    """

    def __init__(self, tracing: Tracing, propagator: TextMapPropagator) -> None:
        provider = tracing.provider
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self.resource = provider.resource
        self.scope = InstrumentationScope("payments_service", __version__)
        self.processor = tracing.processor
        self._propagator = propagator
        self._fields = frozenset(propagator.fields)
        self._getter = _Metadata()

    def traces(self, method: str) -> bool:
        return not method.startswith(UNTRACED_METHOD_PREFIXES)

    def start(self, method: str, context: Any) -> tuple[Span, object]:
        """Start the span of ``method`` and make it current; returns it and the token to
        hand to :func:`end_server_span`."""
        name = method.lstrip("/")
        metadata = context.invocation_metadata() or ()
        fields = self._fields
        if any(key in fields for key, _ in metadata):  # most callers send no trace context
            parent = self._propagator.extract(metadata, getter=self._getter)  # type: ignore[arg-type]
        else:
            parent = _NO_CONTEXT
        caller = trace.get_current_span(parent).get_span_context()
        parent_context = caller if caller.is_valid else None
        trace_id = self._ids.generate_trace_id() if parent_context is None else caller.trace_id
        sampling = self._sampler.should_sample(parent, trace_id, name, SpanKind.SERVER)
        decision = sampling.decision
        span_context = SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=_SAMPLED if decision is Decision.RECORD_AND_SAMPLE else _NOT_SAMPLED,
            trace_state=sampling.trace_state,
        )
        span: Span
        if decision is not Decision.DROP:
            service, _, rpc_method = name.rpartition("/")
            attributes: dict[str, Any] = {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": rpc_method,
                "rpc.grpc.status_code": 0,
                **_peer_attributes(context.peer()),
                **_user_agent(metadata),
                **dict(sampling.attributes or {}),
            }
            span = ServerSpan(self, name, span_context, parent_context, attributes)
        else:
            span = NonRecordingSpan(span_context)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token


def end_server_span(span: Span, token: object, code: grpc.StatusCode) -> None:
    """Make the server span tell how the call ended, end it, and detach it."""
    if span.is_recording():
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in SERVER_FAULT_CODES:
            span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()
    otel_context.detach(token)  # type: ignore[arg-type]
