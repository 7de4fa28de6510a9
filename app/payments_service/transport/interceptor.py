"""The server interceptor every unary call passes through, once.

It maps what a handler raises to the right status (DomainError -> its status, anything
else -> logged + INTERNAL), and, knowing how each call really ended, records it: the
go-grpc-prometheus metrics (with the trace id as exemplar), the truth on the server span
(status code, error status, name without the leading "/"), and one access-log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import trace

from payments_service.domain.errors import DomainError
from payments_service.observability.metrics import Exemplar, GrpcServerMetrics, MethodMetrics
from payments_service.observability.tracing import end_server_span
from payments_service.transport.errors import internal_status, status_for
from payments_service.transport.request_guards import reject_undecodable, tolerant_deserializer

logger = logging.getLogger(__name__)
#: One line per call: method, code, duration, peer. Health checks log at DEBUG (probes).
access_logger = logging.getLogger("payments_service.access")

Behaviour = Callable[[Any, grpc.ServicerContext], Any]
Continuation = Callable[[grpc.HandlerCallDetails], "grpc.RpcMethodHandler[Any, Any] | None"]

_QUIET_METHOD_PREFIX = "/grpc.health."


def _code_set_by_handler(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
    return code


def _code_after_return(context: grpc.ServicerContext) -> grpc.StatusCode:
    """The code the client gets for a handler that returned normally."""
    code = _code_set_by_handler(context)
    if code is not None and code is not grpc.StatusCode.OK:
        return code
    if context.is_active():
        return grpc.StatusCode.OK
    # The call ended while the handler ran: the response is dropped.
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class CallRecorder:
    """What happens when one method's call ends: span, metrics, access log."""

    def __init__(self, method: str, metrics: MethodMetrics | None) -> None:
        self.method = method
        self.metrics = metrics
        self._span_name = method.lstrip("/")
        self._log_level = logging.DEBUG if method.startswith(_QUIET_METHOD_PREFIX) else logging.INFO

    def ended(self, context: grpc.ServicerContext, code: grpc.StatusCode, started: float) -> None:
        """Record a call that ended with ``code``; the server span is still current."""
        seconds = time.perf_counter() - started
        exemplar: Exemplar = None
        span = trace.get_current_span()
        if span.is_recording():
            end_server_span(span, self._span_name, code)
            span_context = span.get_span_context()
            if span_context.trace_flags.sampled:
                exemplar = {"trace_id": format(span_context.trace_id, "032x")}
        if self.metrics is not None:
            self.metrics.handled(code, seconds, exemplar)
        if access_logger.isEnabledFor(self._log_level):
            milliseconds = round(seconds * 1000, 3)
            peer = context.peer()
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


def observe_call(recorder: CallRecorder, behaviour: Behaviour) -> Behaviour:
    """Wrap a unary handler: map its errors to statuses and record how the call ended."""
    method = recorder.method
    metrics = recorder.metrics

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        if metrics is not None:
            metrics.started()
            metrics.received()
        try:
            response = behaviour(request, context)
        except DomainError as error:
            status = status_for(error)
        except Exception as error:
            aborted_with = _code_set_by_handler(context)
            if type(error) is Exception and aborted_with not in (None, grpc.StatusCode.OK):
                # context.abort() further in: the status is already on the context.
                recorder.ended(context, aborted_with, started)
                raise
            logger.exception("Unexpected error in %s", method)
            trace.get_current_span().record_exception(error)
            status = internal_status()
        else:
            recorder.ended(context, _code_after_return(context), started)
            return response
        recorder.ended(context, status.code, started)
        context.abort_with_status(status)

    return handle


class CallInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Applies :func:`observe_call` to every unary-unary method, wrapping each handler once.

    Undecodable request bytes reach the handler as a ValidationError (INVALID_ARGUMENT).

    Register it right inside OpenTelemetry's interceptor (so the server span is current)
    and outside every other interceptor (so it sees every way a call ends).
    """

    def __init__(self, metrics: GrpcServerMetrics | None = None) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        metrics = self._metrics.for_method(method) if self._metrics is not None else None
        wrapped = grpc.unary_unary_rpc_method_handler(
            observe_call(
                CallRecorder(method, metrics), reject_undecodable(method, handler.unary_unary)
            ),
            request_deserializer=tolerant_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped
