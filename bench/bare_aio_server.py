"""The bare server of the service's model: the same trivial handlers, on grpc.aio.

`async def` handlers run on the event loop, as the service's do (plain `def` ones would
go to grpc.aio's thread pool, a thread hop per call). It runs on uvloop, as the service
does; ``BENCH_LOOP=asyncio`` runs it on asyncio's own loop instead.

``BENCH_HANDLERS=service`` serves the service's own handlers instead (conversion,
validation, the payment, the in-memory store), with nothing around them: no call guard,
admission, metrics, access log or tracing. What that costs over the trivial handlers is
the business logic's share, which no change to the rest can take off.
"""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import uvloop

from payments_service import payments_pb2, payments_pb2_grpc


class BareAioServicer(payments_pb2_grpc.PaymentServiceServicer):
    async def RequestPayment(self, _request, _context):  # type: ignore[no-untyped-def]
        return payments_pb2.RequestPaymentResponse(
            payment_id="550e8400-e29b-41d4-a716-446655440000",
            status=payments_pb2.PAYMENT_STATUS_PENDING,
            message="Payment created",
        )

    async def GetPayment(self, request, _context):  # type: ignore[no-untyped-def]
        return payments_pb2.Payment(payment_id=request.payment_id, amount_minor=1250)

    async def Health(self, _request, _context):  # type: ignore[no-untyped-def]
        return payments_pb2.HealthResponse(status="SERVING")


def _servicer() -> payments_pb2_grpc.PaymentServiceServicer:
    if os.environ.get("BENCH_HANDLERS") != "service":
        return BareAioServicer()
    from payments_service.server import HEALTH_SERVICES
    from payments_service.service import PaymentService
    from payments_service.storage.memory import InMemoryPaymentRepository
    from payments_service.transport.health import HealthService
    from payments_service.transport.servicer import PaymentServicer

    service = PaymentService(InMemoryPaymentRepository())
    return PaymentServicer(service, HealthService(HEALTH_SERVICES))


async def serve() -> None:
    server = grpc.aio.server()
    payments_pb2_grpc.add_PaymentServiceServicer_to_server(_servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{os.environ['PORT']}")
    await server.start()
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    await server.stop(0)


if __name__ == "__main__":
    if os.environ.get("BENCH_LOOP") == "asyncio":
        asyncio.run(serve())
    else:
        uvloop.run(serve())
