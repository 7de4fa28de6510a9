"""The servers a benchmark run can measure. Add a Target to TARGETS to measure a variant.

Each target is a server process started with ``python`` + ``args`` and ``env`` (plus
PORT); ``prepare`` may start helpers (a receiver, a database) and return extra env.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from tests.support.network import free_port
from tests.support.postgres import fresh_database


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


# The service's own work: no metrics, no tracing, no access log.
_QUIET = {"LOG_LEVEL": "WARNING", "METRICS_PORT": "0", "OTEL_SDK_DISABLED": "true"}
#: A queue large enough that no span is dropped at full speed (the sink counts them).
_NO_SPAN_DROPPED = {"OTEL_BSP_MAX_QUEUE_SIZE": "16384"}


def _metrics_port(_stack: ExitStack) -> dict[str, str]:
    """The defaults serve /metrics on 9464, which another process may hold: a free port."""
    return {"METRICS_PORT": str(free_port())}


def _otlp_sink(stack: ExitStack) -> dict[str, str]:
    """A live OTLP/gRPC receiver in a subprocess on the load generator's CPU."""
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.otlp_sink", str(port)])

    def stop() -> None:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=15)

    stack.callback(stop)
    return {**_metrics_port(stack), "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}


def _postgres_database(stack: ExitStack) -> dict[str, str]:
    """A fresh, migrated database on DATABASE_URL's server (default: the local one)."""
    return {"DATABASE_URL": stack.enter_context(fresh_database())}


TARGETS: dict[str, Target] = {
    "bare": Target(
        "bare",
        "grpc.aio with trivial async handlers on uvloop: the floor of the service's server "
        "model and event loop",
        args=("-m", "bench.bare_aio_server"),
        baseline=None,
    ),
    "bare-asyncio": Target(
        "bare-asyncio",
        "the same on asyncio's own event loop (the loop the service does not use)",
        args=("-m", "bench.bare_aio_server"),
        env={"BENCH_LOOP": "asyncio"},
        baseline=None,
    ),
    "bare-sync": Target(
        "bare-sync",
        "grpcio's synchronous server with trivial handlers and 10 threads: the cheapest "
        "grpcio server there is",
        args=("-m", "bench.bare_server"),
        baseline=None,
    ),
    "handlers": Target(
        "handlers",
        "the bare server serving the service's own handlers (conversion, validation, the "
        "payment, the in-memory store) with nothing around them: the business logic's cost",
        args=("-m", "bench.bare_aio_server"),
        env={"BENCH_HANDLERS": "service"},
    ),
    "quiet": Target(
        "quiet",
        "payments-service, in-memory store, no metrics, tracing or access log: its own work",
        env=_QUIET,
    ),
    "defaults": Target(
        "defaults",
        "payments-service as `make run` starts it: metrics, access log at INFO, tracing "
        "without an OTLP endpoint",
        prepare=_metrics_port,
    ),
    "traced": Target(
        "traced",
        "the defaults plus an OTLP endpoint (a live receiver): every call traced and exported",
        env=_NO_SPAN_DROPPED,
        prepare=_otlp_sink,
    ),
    "traced-10": Target(
        "traced-10",
        "as traced, 10% of calls sampled (parentbased_traceidratio 0.1, the production advice)",
        env={
            **_NO_SPAN_DROPPED,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
        prepare=_otlp_sink,
    ),
    "postgres": Target(
        "postgres",
        "as quiet, on the PostgreSQL store (local server, fresh database, pool up to 66 "
        "connections so it never limits)",
        env={**_QUIET, "STORAGE_BACKEND": "postgres", "DATABASE_POOL_MAX_SIZE": "66"},
        prepare=_postgres_database,
        baseline="quiet",
    ),
}

PYTHON = sys.executable
