"""Interceptors that stop hostile or pointless calls before any work is done.

* :class:`UndecodableRequestInterceptor`: bytes that are not a valid request message get
  INVALID_ARGUMENT (the caller's fault) instead of grpcio's default INTERNAL, which would
  page an operator. It raises a domain ValidationError, so the one error mapping answers.
* :class:`ExpiredDeadlineInterceptor`: a call whose deadline has passed, or whose client
  has gone, is answered without running the handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from payments_service.domain.errors import FieldViolation, ValidationError

Continuation = Callable[[grpc.HandlerCallDetails], "grpc.RpcMethodHandler[Any, Any] | None"]
Behaviour = Callable[[Any, grpc.ServicerContext], Any]


class UndecodableRequest:
    """Stands in for a request whose bytes could not be decoded."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def tolerant_deserializer(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any]:
    """Wrap ``deserializer`` so a decoding failure yields an :class:`UndecodableRequest`."""

    def deserialize(data: bytes) -> Any:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as error:  # any decoding failure is the client's fault
            return UndecodableRequest(error)

    return deserialize


def reject_undecodable(method: str, behaviour: Behaviour) -> Behaviour:
    """Wrap a unary handler so an undecodable request raises a ValidationError."""

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, UndecodableRequest):
            raise ValidationError(
                [FieldViolation("request", f"is not a valid request message for {method}")]
            )
        return behaviour(request, context)

    return handle


class UnaryHandlerWrapper(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Base: wraps each unary-unary method handler once with :meth:`wrap`."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def wrap(
        self, method: str, behaviour: Behaviour, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler to use instead of ``handler`` (whose unary_unary is ``behaviour``)."""
        raise NotImplementedError

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
        wrapped = self.wrap(method, handler.unary_unary, handler)
        self._wrapped[method] = wrapped
        return wrapped


class UndecodableRequestInterceptor(UnaryHandlerWrapper):
    """Turns undecodable request bytes into INVALID_ARGUMENT for unary-unary methods.

    Register it after the error-mapping interceptor (innermost), so the ValidationError
    it raises is mapped like any other.
    """

    def wrap(
        self, method: str, behaviour: Behaviour, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            reject_undecodable(method, behaviour),
            request_deserializer=tolerant_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def skip_expired(behaviour: Behaviour) -> Behaviour:
    """Wrap a unary handler so it is not run once the call's deadline has passed."""

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before work began")
        if not context.is_active():
            context.abort(grpc.StatusCode.CANCELLED, "client cancelled before work began")
        return behaviour(request, context)

    return handle


class ExpiredDeadlineInterceptor(UnaryHandlerWrapper):
    """Answers calls whose deadline has passed without running their handler.

    grpcio already drops calls that expire while waiting for a worker thread; this closes
    the remaining gap between taking a thread and starting work. It aborts directly, so
    every interceptor outside it must let ``context.abort`` through (the call interceptor
    records the code and re-raises).
    """

    def wrap(
        self, method: str, behaviour: Behaviour, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            skip_expired(behaviour),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
