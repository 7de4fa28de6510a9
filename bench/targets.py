"""The servers a benchmark run can measure. Add a Target to TARGETS to measure a variant.

Each target is a server process started with ``python`` + ``args`` and ``env`` (plus
PORT); ``prepare`` may start helpers (a receiver, a database) and return extra env.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    args: tuple[str, ...] = ("-m", "payments_service")
    env: dict[str, str] = field(default_factory=dict)
    #: Started before the server; returns extra environment for it. Cleaned up by the stack.
    prepare: Callable[[ExitStack], dict[str, str]] | None = None
    #: The target this one is reported as a ratio to (None: not compared).
    baseline: str | None = "bare"


# Telemetry is off in "service" so it measures the service's own work.
_QUIET = {"LOG_LEVEL": "WARNING", "METRICS_PORT": "0", "OTEL_SDK_DISABLED": "true"}

TARGETS: dict[str, Target] = {
    "bare": Target(
        "bare",
        "bare grpcio server, trivial handlers (the ceiling)",
        args=("-m", "bench.bare_server"),
        baseline=None,
    ),
    "service": Target("service", "payments-service, in-memory store, telemetry off", env=_QUIET),
}

PYTHON = sys.executable
