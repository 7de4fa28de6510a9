"""The same trivial handlers on grpc.aio: measures the server model we did not choose."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc

from bench.bare_server import BareServicer
from payments_service import payments_pb2_grpc


async def serve() -> None:
    server = grpc.aio.server()
    payments_pb2_grpc.add_PaymentServiceServicer_to_server(BareServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{os.environ['PORT']}")
    await server.start()
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(serve())
