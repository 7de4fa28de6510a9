"""payments.v1.PaymentService: convert, call the application service, convert back."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from payments_service import payments_pb2, payments_pb2_grpc
from payments_service.service import PaymentService
from payments_service.transport.conversion import (
    payment_request_from_proto,
    payment_result_to_proto,
    payment_to_proto,
)
from payments_service.transport.health import Context, HealthService

SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    """The gRPC face of :class:`PaymentService`. Errors are mapped by the interceptor."""

    def __init__(self, service: PaymentService, health: HealthService) -> None:
        self._service = service
        self._health = health

    async def RequestPayment(
        self, request: payments_pb2.RequestPaymentRequest, _context: Context
    ) -> payments_pb2.RequestPaymentResponse:
        result = await self._service.request_payment(payment_request_from_proto(request))
        return payment_result_to_proto(result)

    async def GetPayment(
        self, request: payments_pb2.GetPaymentRequest, _context: Context
    ) -> payments_pb2.Payment:
        return payment_to_proto(await self._service.get_payment(request.payment_id))

    async def Health(
        self, _request: payments_pb2.HealthRequest, _context: Context
    ) -> payments_pb2.HealthResponse:
        # The same answer the standard grpc.health.v1 service gives for this service.
        status = self._health.status(SERVICE_NAME) or health_pb2.HealthCheckResponse.UNKNOWN
        return payments_pb2.HealthResponse(
            status=health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        )
