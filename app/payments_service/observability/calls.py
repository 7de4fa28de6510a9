"""What the server records of each call: its server span, the go-grpc-prometheus metrics
(with the trace id as exemplar) and the access log.

The access log has one line at INFO for every call that failed or took longer than
SLOW_CALL_SECONDS, with the call's trace id; other calls get their line only at DEBUG
(the metrics count them all). A line costs more than the rest of a fast call's telemetry,
and a log of every successful call says nothing the metrics do not.

:class:`CallTelemetry` is the :class:`~payments_service.transport.calls.CallObserver`
the server gives its call guard.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any
from urllib.parse import unquote

import grpc

from payments_service.observability.grpc_metrics import Exemplar, GrpcServerMetrics, MethodMetrics
from payments_service.observability.tracing import ServerSpans, caller_trace_id, end_server_span

access_logger = logging.getLogger("payments_service.access")

#: Health checks are probes: even their failures are only logged at DEBUG.
_QUIET_METHOD_PREFIX = "/grpc.health."

_OK = grpc.StatusCode.OK

#: What started() hands to ended(): the start time, the span and its context token.
Call = tuple[float, Any, Any]


class MethodTelemetry:
    """What happens when a call of one method starts and ends."""

    def __init__(
        self,
        method: str,
        metrics: MethodMetrics | None,
        spans: ServerSpans | None,
        slow_seconds: float,
    ) -> None:
        self.method = method
        self.metrics = metrics
        self._spans = spans if spans is not None and spans.traces(method) else None
        self._slow_seconds = slow_seconds
        self._failure_level = (
            logging.DEBUG if method.startswith(_QUIET_METHOD_PREFIX) else logging.INFO
        )

    def started(self, context: Any) -> Call:
        """Count the call and start its span (current until :meth:`ended`)."""
        if self.metrics is not None:
            self.metrics.started()
        if self._spans is None:
            return time.perf_counter(), None, None
        span, token = self._spans.start(self.method, context)
        return time.perf_counter(), span, token

    def ended(
        self, call: Call, context: Any, code: grpc.StatusCode, error: BaseException | None = None
    ) -> None:
        """Record a call that ended with ``code``; its span is still current."""
        started, span, token = call
        seconds = time.perf_counter() - started
        level = (
            logging.DEBUG if code is _OK and seconds < self._slow_seconds else self._failure_level
        )
        if access_logger.isEnabledFor(level):
            self._log(level, context, code, seconds, span)
        exemplar: Exemplar = None
        if span is not None:
            if error is not None and span.is_recording():
                span.record_exception(error)
            span_context = span.get_span_context()
            if span_context.trace_flags.sampled:
                exemplar = {"trace_id": format(span_context.trace_id, "032x")}
            end_server_span(span, token, code)
        if self.metrics is not None:
            self.metrics.handled(code, seconds, exemplar)

    def _log(
        self, level: int, context: Any, code: grpc.StatusCode, seconds: float, span: Any
    ) -> None:
        """The access-log line, written while the span is current (its ids go with it)."""
        milliseconds = round(seconds * 1000, 3)
        peer = unquote(context.peer())
        if span is not None:
            trace_id = format(span.get_span_context().trace_id, "032x")
        else:  # no tracing: the caller's trace id, or one of the call's own
            trace_id = caller_trace_id(context.invocation_metadata() or ()) or (
                f"{random.getrandbits(128):032x}"
            )
        access_logger.log(
            level,
            "%s %s %.2fms peer=%s trace_id=%s",
            self.method,
            code.name,
            milliseconds,
            peer,
            trace_id,
            extra={
                "grpc_method": self.method,
                "grpc_code": code.name,
                "duration_ms": milliseconds,
                "peer": peer,
                "trace_id": trace_id,
            },
        )


class CallTelemetry:
    """Hands each method its :class:`MethodTelemetry` (metrics bound once per method)."""

    def __init__(
        self, metrics: GrpcServerMetrics | None, spans: ServerSpans | None, slow_seconds: float
    ) -> None:
        self._metrics = metrics
        self._spans = spans
        self._slow_seconds = slow_seconds

    def for_method(self, method: str) -> MethodTelemetry:
        metrics = self._metrics.for_method(method) if self._metrics is not None else None
        return MethodTelemetry(method, metrics, self._spans, self._slow_seconds)
