"""Readiness: follow a dependency (the database) and report when it comes and goes.

The monitor only decides *whether* the service can do its job; the composition root
turns that into the standard health service's status for ``payments.v1.PaymentService``
(liveness, the ``""`` service, never depends on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


class ReadinessMonitor:
    """Awaits ``check`` every ``interval`` seconds in a task on the event loop.

    ``on_change(ready)`` runs after the first check and then on every change. ``check``
    must bound its own time (the PostgreSQL store's ping does); ``stop()`` does not wait
    for a check in progress.
    """

    def __init__(
        self,
        check: Callable[[], Awaitable[bool]],
        on_change: Callable[[bool], None],
        *,
        interval: float = 1.0,
        name: str = "readiness",
    ) -> None:
        self._check = check
        self._on_change = on_change
        self._interval = interval
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._ready: bool | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._poll()
            await asyncio.sleep(self._interval)

    async def _poll(self) -> None:
        try:
            ready = await self._check()
        except Exception:
            logger.exception("Readiness check %s raised; reporting not ready", self._name)
            ready = False
        if ready == self._ready:
            return
        if self._ready is not None or not ready:
            logger.warning(
                "%s: %s", self._name, "ready again" if ready else "dependency unreachable"
            )
        self._ready = ready
        self._on_change(ready)
