"""The server interceptor that turns whatever a handler raises into the right status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from payments_service.domain.errors import DomainError
from payments_service.transport.errors import internal_status, status_for

logger = logging.getLogger(__name__)

Behaviour = Callable[[Any, grpc.ServicerContext], Any]


def map_errors(method: str, behaviour: Behaviour) -> Behaviour:
    """Wrap a unary handler so DomainErrors become their status and anything else INTERNAL."""

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behaviour(request, context)
        except DomainError as error:
            context.abort_with_status(status_for(error))
        except Exception:
            logger.exception("Unexpected error in %s", method)
            context.abort_with_status(internal_status())

    return handle


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Applies :func:`map_errors` to every unary-unary method, wrapping each handler once."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            map_errors(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped
