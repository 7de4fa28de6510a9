"""Undecodable requests: the client's fault, so INVALID_ARGUMENT, not grpcio's INTERNAL.

grpcio answers request bytes its deserializer rejects with INTERNAL, which would page an
operator for a client's mistake. :func:`tolerant_deserializer` hands such bytes on as an
:class:`UndecodableRequest`, and :func:`reject_undecodable` raises a domain
ValidationError for it, so the one error mapping answers. The call interceptor applies
both to every unary method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from payments_service.domain.errors import FieldViolation, ValidationError

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
