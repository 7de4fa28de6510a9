"""The servers a benchmark run can measure. Add a Target to TARGETS to measure a variant.

Each target is a server process started with ``python`` + ``args`` and ``env`` (plus
PORT); ``prepare`` may start helpers (a receiver, a database) and return extra env.
"""

from __future__ import annotations

import signal
import socket
import subprocess
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _otlp_sink(stack: ExitStack) -> dict[str, str]:
    """A live OTLP/gRPC receiver in a subprocess on the load generator's CPU."""
    port = _free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.otlp_sink", str(port)])

    def stop() -> None:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=15)

    stack.callback(stop)
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "METRICS_PORT": str(_free_port()),
    }


# Full telemetry: every call traced (100% sampling) and exported, metrics with exemplars.
# The access log is off (LOG_LEVEL=WARNING) so the terminal shows only the figures.
_TELEMETRY = {
    "LOG_LEVEL": "WARNING",
    "OTEL_TRACES_SAMPLER": "always_on",
    "OTEL_BSP_MAX_QUEUE_SIZE": "8192",
}

TARGETS: dict[str, Target] = {
    "bare": Target(
        "bare",
        "bare grpcio server, trivial handlers (the ceiling)",
        args=("-m", "bench.bare_server"),
        baseline=None,
    ),
    "service": Target("service", "payments-service, in-memory store, telemetry off", env=_QUIET),
    "telemetry": Target(
        "telemetry",
        "payments-service with traces (100% sampled, exported over OTLP to a live receiver) "
        "and Prometheus metrics with exemplars",
        env=_TELEMETRY,
        prepare=_otlp_sink,
    ),
}

PYTHON = sys.executable
