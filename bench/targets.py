"""The servers a benchmark run can measure. Add a Target to TARGETS to measure a variant.

Each target is a server process started with ``python`` + ``args`` and ``env`` (plus
PORT); ``prepare`` may start helpers (a receiver, a database) and return extra env.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import make_conninfo

from payments_service.storage.migrate import apply_migrations


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _otlp_sink(stack: ExitStack) -> dict[str, str]:
    """A live OTLP/gRPC receiver in a subprocess on the load generator's CPU."""
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.otlp_sink", str(port)])

    def stop() -> None:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=15)

    stack.callback(stop)
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "METRICS_PORT": str(free_port()),
    }


# Full telemetry: every call traced (100% sampling) and exported, metrics with exemplars.
# The access log is off (LOG_LEVEL=WARNING) so the terminal shows only the figures.
_TELEMETRY = {
    "LOG_LEVEL": "WARNING",
    "OTEL_TRACES_SAMPLER": "always_on",
    "OTEL_BSP_MAX_QUEUE_SIZE": "8192",
}


def _postgres_database(stack: ExitStack) -> dict[str, str]:
    """A fresh, migrated database on DATABASE_URL's server (default: the local one)."""
    server = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    name = f"payments_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    stack.callback(drop)
    url = make_conninfo(server, dbname=name)
    apply_migrations(url)
    return {"DATABASE_URL": url}


TARGETS: dict[str, Target] = {
    "bare": Target(
        "bare",
        "bare grpcio server, trivial handlers (the ceiling)",
        args=("-m", "bench.bare_server"),
        baseline=None,
    ),
    "bare-aio": Target(
        "bare-aio",
        "the same trivial handlers on grpc.aio (the server model we did not choose)",
        args=("-m", "bench.bare_aio_server"),
    ),
    "service": Target("service", "payments-service, in-memory store, telemetry off", env=_QUIET),
    "no-cap": Target(
        "no-cap",
        "as service, without the concurrency cap (MAX_CONCURRENT_RPCS=0): grpcio's cap "
        "bookkeeping takes a lock the serving loop holds",
        env={**_QUIET, "MAX_CONCURRENT_RPCS": "0"},
    ),
    "telemetry": Target(
        "telemetry",
        "payments-service with traces (100% sampled, exported over OTLP to a live receiver) "
        "and Prometheus metrics with exemplars",
        env=_TELEMETRY,
        prepare=_otlp_sink,
    ),
    "telemetry-10": Target(
        "telemetry-10",
        "as telemetry, 10% of calls sampled (parentbased_traceidratio 0.1, the production advice)",
        env={
            **_TELEMETRY,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
        prepare=_otlp_sink,
    ),
    "postgres": Target(
        "postgres",
        "payments-service, PostgreSQL store (local server, fresh database, pool up to 66 "
        "connections so it never limits), telemetry off",
        env={**_QUIET, "STORAGE_BACKEND": "postgres", "DATABASE_POOL_MAX_SIZE": "66"},
        prepare=_postgres_database,
        baseline="service",
    ),
}

PYTHON = sys.executable
