"""What the server records of each call: the server span's final state, the
go-grpc-prometheus metrics (with the trace id as exemplar) and one access-log line.

:class:`CallTelemetry` is the :class:`~payments_service.transport.interceptor.CallObserver`
the server gives its interceptor.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import unquote

import grpc

from payments_service.observability.grpc_metrics import Exemplar, GrpcServerMetrics, MethodMetrics
from payments_service.observability.tracing import ServerSpans, end_server_span

#: One line per call: method, code, duration, peer. Health checks log at DEBUG (probes).
access_logger = logging.getLogger("payments_service.access")

_QUIET_METHOD_PREFIX = "/grpc.health."


class MethodTelemetry:
    """What happens when a call of one method starts and ends."""

    def __init__(
        self, method: str, metrics: MethodMetrics | None, spans: ServerSpans | None
    ) -> None:
        self.method = method
        self.metrics = metrics
        self._spans = spans if spans is not None and spans.traces(method) else None
        self._log_level = logging.DEBUG if method.startswith(_QUIET_METHOD_PREFIX) else logging.INFO

    def started(self, context: Any) -> tuple[float, Any, Any]:
        """Count the call and start its span (current until :meth:`ended`)."""
        if self.metrics is not None:
            self.metrics.started()
            self.metrics.received()
        if self._spans is None:
            return time.perf_counter(), None, None
        span, token = self._spans.start(self.method, context)
        return time.perf_counter(), span, token

    def ended(
        self,
        call: tuple[float, Any, Any],
        context: Any,
        code: grpc.StatusCode,
        error: BaseException | None = None,
    ) -> None:
        """Record a call that ended with ``code``; its span is still current."""
        started, span, token = call
        seconds = time.perf_counter() - started
        exemplar: Exemplar = None
        self._log(context, code, seconds)
        if span is not None:
            if error is not None and span.is_recording():
                span.record_exception(error)
            span_context = span.get_span_context()
            if span_context.trace_flags.sampled:
                exemplar = {"trace_id": format(span_context.trace_id, "032x")}
            end_server_span(span, token, code)
        if self.metrics is not None:
            self.metrics.handled(code, seconds, exemplar)

    def _log(self, context: Any, code: grpc.StatusCode, seconds: float) -> None:
        """The access-log line, written while the span is current (its ids go with it)."""
        if access_logger.isEnabledFor(self._log_level):
            milliseconds = round(seconds * 1000, 3)
            peer = unquote(context.peer())
            access_logger.log(
                self._log_level,
                "%s %s %.2fms peer=%s",
                self.method,
                code.name,
                milliseconds,
                peer,
                extra={
                    "grpc_method": self.method,
                    "grpc_code": code.name,
                    "duration_ms": milliseconds,
                    "peer": peer,
                },
            )


class CallTelemetry:
    """Hands each method its :class:`MethodTelemetry` (metrics bound once per method)."""

    def __init__(self, metrics: GrpcServerMetrics | None, spans: ServerSpans | None) -> None:
        self._metrics = metrics
        self._spans = spans

    def for_method(self, method: str) -> MethodTelemetry:
        metrics = self._metrics.for_method(method) if self._metrics is not None else None
        return MethodTelemetry(method, metrics, self._spans)
