"""payments.v1.PaymentService: convert, call the application service, convert back."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer

from payments_service import payments_pb2, payments_pb2_grpc
from payments_service.service import PaymentService
from payments_service.transport.conversion import (
    payment_result_to_proto,
    payment_to_proto,
    request_payment_arguments,
)

SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    """The gRPC face of :class:`PaymentService`. Errors are mapped by the interceptor."""

    def __init__(self, service: PaymentService, health: HealthServicer) -> None:
        self._service = service
        self._health = health

    def RequestPayment(
        self, request: payments_pb2.RequestPaymentRequest, context: grpc.ServicerContext
    ) -> payments_pb2.RequestPaymentResponse:
        result = self._service.request_payment(**request_payment_arguments(request))
        return payment_result_to_proto(result)

    def GetPayment(
        self, request: payments_pb2.GetPaymentRequest, context: grpc.ServicerContext
    ) -> payments_pb2.Payment:
        return payment_to_proto(self._service.get_payment(request.payment_id))

    def Health(
        self, request: payments_pb2.HealthRequest, context: grpc.ServicerContext
    ) -> payments_pb2.HealthResponse:
        # The same answer the standard grpc.health.v1 service gives for this service.
        check = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        answer = self._health.Check(check, context)
        status: str = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return payments_pb2.HealthResponse(status=status)
