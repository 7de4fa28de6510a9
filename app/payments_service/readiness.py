"""Readiness: follow a dependency (the database) and report when it comes and goes.

The monitor only decides *whether* the service can do its job; the composition root
turns that into the standard health service's status for ``payments.v1.PaymentService``
(liveness, the ``""`` service, never depends on it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

logger = logging.getLogger(__name__)


@runtime_checkable
class SupportsPing(Protocol):
    """A store that can tell whether it is reachable (PostgreSQL can, memory need not)."""

    def ping(self) -> bool: ...


class ReadinessMonitor:
    """Calls ``check`` every ``interval`` seconds on a daemon thread.

    ``on_change(ready)`` runs after the first check and then on every change. The first
    check runs on the thread too, so ``start()`` never waits for a slow dependency.
    """

    def __init__(
        self,
        check: Callable[[], bool],
        on_change: Callable[[bool], None],
        *,
        interval: float = 1.0,
        name: str = "readiness",
    ) -> None:
        self._check = check
        self._on_change = on_change
        self._interval = interval
        self._name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready: bool | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        self._poll()
        while not self._stopping.wait(self._interval):
            self._poll()

    def _poll(self) -> None:
        try:
            ready = self._check()
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
