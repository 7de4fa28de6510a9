"""Shared fixtures: a real server on a real (free) port, channels, stubs and tool lookup."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from payments_service import payments_pb2_grpc
from payments_service.config import Settings
from payments_service.server import PaymentServer, build_server

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip when a needed tool or service is missing, but fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing requirement is a failure, not a skip)")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of an executable (looked up in .venv/bin first, then PATH)."""
    venv_bin = str(Path(sys.executable).parent)
    path = shutil.which(name, path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    require(path is not None, f"{name} is not installed")
    assert path is not None
    return path


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def make_settings(**overrides: Any) -> Settings:
    """Settings for an in-process test server on loopback; port 0 binds a free port.

    PORT=0 is not a valid setting for users, so it is set after validation.
    """
    # metrics_port 0: no /metrics endpoint, so parallel test servers never share 9464.
    values: dict[str, Any] = {"host": "127.0.0.1", "max_workers": 16, "metrics_port": 0}
    values.update(overrides)
    port = values.pop("port", 0)
    return Settings(**values).model_copy(update={"port": port})


@pytest.fixture
def server_factory() -> Iterator[Callable[..., PaymentServer]]:
    """Build and start in-process servers; all are stopped at the end of the test."""
    started: list[PaymentServer] = []

    def start(settings: Settings | None = None, **kwargs: Any) -> PaymentServer:
        app = build_server(settings or make_settings(), **kwargs)
        app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop(0)


@pytest.fixture
def server(server_factory: Callable[..., PaymentServer]) -> PaymentServer:
    """A running server with the in-memory store."""
    return server_factory()


@pytest.fixture
def channel(server: PaymentServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> payments_pb2_grpc.PaymentServiceStub:
    return payments_pb2_grpc.PaymentServiceStub(channel)


def start_server_process(
    env: dict[str, str] | None = None, args: tuple[str, ...] = ("-m", "payments_service.server")
) -> subprocess.Popen[str]:
    """Start ``python -m payments_service.server`` with ``env`` added to a clean environment."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full_env["METRICS_PORT"] = "0"  # unless a test asks for /metrics: 9464 may be taken
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
