"""grpc.health.v1 (Check, List, Watch) for the API port and the health-only port.

The stock asyncio servicer (grpc_health.v1.health.aio) sends a Watch's answers while it
holds the service's lock, so one client that never opens its flow-control window keeps
that lock: every later status change, and the graceful shutdown, wait for it forever.
Here a Watch only reads the status and waits for a change signal; no lock exists, and a
stalled watcher stalls nobody but itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ServingStatus: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus
Context = grpc.aio.ServicerContext[Any, Any]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """The status of each service name, as the server sets it, for health clients.

    Use it from the server's event loop: :meth:`set` wakes every Watch at once.
    """

    def __init__(self, services: Iterable[str]) -> None:
        self._status: dict[str, ServingStatus] = dict.fromkeys(services, NOT_SERVING)
        self._changed = asyncio.Event()
        self._shutting_down = False

    def status(self, service: str) -> ServingStatus | None:
        """The status of ``service``, None for a name nobody set."""
        return self._status.get(service)

    def set(self, service: str, status: ServingStatus) -> None:
        """Report ``status`` for ``service`` (ignored once shutdown has begun)."""
        if self._shutting_down or self._status.get(service) == status:
            return
        self._status[service] = status
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def enter_graceful_shutdown(self) -> None:
        """Report NOT_SERVING for every service, for good."""
        for service in self._status:
            self.set(service, NOT_SERVING)
        self._shutting_down = True

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, _request: health_pb2.HealthListRequest, _context: Context
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._status.items()
            }
        )

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Context) -> None:
        """Send the status now and after each change (the latest one, if several came
        while a send was under way), until the client leaves or the server stops."""
        sent: ServingStatus | None = None
        while True:
            changed = self._changed
            status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status == sent:
                await changed.wait()
                continue
            await context.write(health_pb2.HealthCheckResponse(status=status))
            sent = status
