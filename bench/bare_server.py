"""The baseline: a bare grpcio server with trivial handlers for the same API.

Same server model as the service (sync grpcio, a thread pool of MAX_WORKERS), no
validation, storage, interceptors or telemetry: the ceiling the service is compared to.
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent import futures

import grpc

from payments_service import payments_pb2, payments_pb2_grpc


class BareServicer(payments_pb2_grpc.PaymentServiceServicer):
    def RequestPayment(self, _request, _context):  # type: ignore[no-untyped-def]
        return payments_pb2.RequestPaymentResponse(
            payment_id="550e8400-e29b-41d4-a716-446655440000",
            status=payments_pb2.PAYMENT_STATUS_PENDING,
            message="Payment created",
        )

    def GetPayment(self, request, _context):  # type: ignore[no-untyped-def]
        return payments_pb2.Payment(payment_id=request.payment_id, amount_minor=1250)

    def Health(self, _request, _context):  # type: ignore[no-untyped-def]
        return payments_pb2.HealthResponse(status="SERVING")


def main() -> None:
    workers = int(os.environ.get("MAX_WORKERS", "10"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    payments_pb2_grpc.add_PaymentServiceServicer_to_server(BareServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{os.environ['PORT']}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
