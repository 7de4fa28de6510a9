"""A plaintext port that serves only grpc.health.v1, for probes that cannot speak TLS."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from payments_service.config import Settings

logger = logging.getLogger(__name__)

#: Probes are short and rare; two threads are plenty and stay free under API overload.
HEALTH_WORKERS = 2


def build_health_server(
    settings: Settings, health_servicer: health.HealthServicer
) -> tuple[grpc.Server, int] | None:
    """A server on HEALTH_PORT sharing ``health_servicer`` with the main server, or None.

    It has its own threads and no concurrency cap, so probes are answered even while
    the API port is saturated or refusing calls with RESOURCE_EXHAUSTED.
    """
    if settings.health_port == 0:
        return None
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=HEALTH_WORKERS, thread_name_prefix="grpc-health"),
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 1024)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.health_port}")
    logger.info("Health-only plaintext port bound to %s:%d", settings.host, port)
    return server, port
