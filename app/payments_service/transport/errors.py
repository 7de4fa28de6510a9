"""The one place where domain errors become gRPC statuses with rich details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from payments_service.domain.errors import (
    DomainError,
    IdempotencyKeyReusedError,
    PaymentNotFoundError,
    StoreUnavailableError,
    ValidationError,
)

#: ErrorInfo.domain of every error this service reports.
ERROR_DOMAIN = "payments.v1"

_CODES: dict[type[DomainError], grpc.StatusCode] = {
    ValidationError: grpc.StatusCode.INVALID_ARGUMENT,
    IdempotencyKeyReusedError: grpc.StatusCode.FAILED_PRECONDITION,
    PaymentNotFoundError: grpc.StatusCode.NOT_FOUND,
    StoreUnavailableError: grpc.StatusCode.UNAVAILABLE,
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_code_for(error: DomainError) -> grpc.StatusCode:
    """The gRPC code for a domain error (INTERNAL for one nobody mapped)."""
    for error_type in type(error).__mro__:
        code = _CODES.get(error_type)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def status_for(error: DomainError) -> grpc.Status:
    """A status carrying ErrorInfo, plus BadRequest field violations for invalid input."""
    code = status_code_for(error)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
    if isinstance(error, IdempotencyKeyReusedError | PaymentNotFoundError):
        info.metadata["payment_id"] = error.payment_id
    details = [_pack(info)]
    if isinstance(error, ValidationError):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    message = str(error)
    if isinstance(error, ValidationError):
        message += ": " + "; ".join(f"{v.field} {v.description}" for v in error.violations)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=details)
    )


def internal_status() -> grpc.Status:
    """The status for an unexpected failure: a generic message, details only in the log."""
    return rpc_status.to_status(
        status_pb2.Status(
            code=grpc.StatusCode.INTERNAL.value[0],
            message="internal error; the service logged the details",
        )
    )


def _refusal(code: grpc.StatusCode, reason: str, message: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[_pack(info)])
    )


def shutting_down_status() -> grpc.Status:
    """For a call that arrives once a graceful shutdown has begun: retry elsewhere."""
    return _refusal(
        grpc.StatusCode.UNAVAILABLE,
        "SHUTTING_DOWN",
        "the server is shutting down; retry (another replica will answer)",
    )


def overloaded_status(cap: int) -> grpc.Status:
    """For a call over the concurrency cap (MAX_CONCURRENT_RPCS)."""
    return _refusal(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "OVERLOADED",
        f"too many calls in progress (MAX_CONCURRENT_RPCS={cap}); retry with backoff",
    )


def expired_status() -> grpc.Status:
    """For a call whose deadline passed while it waited its turn: it did nothing."""
    return rpc_status.to_status(
        status_pb2.Status(
            code=grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
            message="the deadline passed while the call waited its turn; nothing was done",
        )
    )
