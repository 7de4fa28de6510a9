"""Shared fixtures: a real server on a real (free) port, channels, stubs and tool lookup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import uvloop

from payments_service import payments_pb2_grpc
from payments_service.config import Settings
from payments_service.server import Server, build_server

T = TypeVar("T")

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


class LoopThread:
    """An asyncio event loop on a thread of its own.

    In-process servers run there, as they run on the main thread's loop in production,
    while the tests call them with ordinary blocking gRPC clients.
    """

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()  # the loop the service runs on
        self._thread = threading.Thread(target=self.loop.run_forever, name="server-loop")
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coroutine`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Call a plain function on the loop's thread (state there is not thread-safe)."""

        async def call() -> T:
            return function(*args)

        return self.run(call())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class RunningServer:
    """A started :class:`Server` on a :class:`LoopThread`, with blocking helpers."""

    def __init__(self, app: Server, loop: LoopThread) -> None:
        self.app = app
        self.loop = loop

    @property
    def port(self) -> int:
        return self.app.port

    @property
    def health_port(self) -> int | None:
        return self.app.health_port

    def count(self) -> int:
        """Payments in the server's store."""
        return self.loop.run(self.app.repository.count())

    def enter_graceful_shutdown(self) -> None:
        """What stop() does first: every health status NOT_SERVING."""
        self.loop.call(self.app.health.enter_graceful_shutdown)

    def stop(self, grace: float = 0) -> None:
        self.loop.run(self.app.stop(grace))


ServerFactory = Callable[..., RunningServer]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """async tests (pytest-asyncio) run on uvloop, as the service does."""
    return {"uvloop": uvloop.new_event_loop}


def start_server(
    loop: LoopThread, settings: Settings | None = None, **kwargs: Any
) -> RunningServer:
    """Build and start a server on ``loop``.

    ``repository`` may be a store, or a function returning one (called on the loop).
    """
    make_repository = kwargs.pop("repository", None)

    async def build() -> Server:
        repository = make_repository() if callable(make_repository) else make_repository
        app = await build_server(settings or make_settings(), repository=repository, **kwargs)
        await app.start()
        return app

    return RunningServer(loop.run(build()), loop)


@contextlib.contextmanager
def running_server(settings: Settings | None = None, **kwargs: Any) -> Iterator[RunningServer]:
    """A server started on an event loop of its own, stopped (spans flushed) at the end."""
    loop = LoopThread()
    try:
        running = start_server(loop, settings, **kwargs)
        try:
            yield running
        finally:
            running.stop(0)
    finally:
        loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    """The event loop in-process servers run on; closed after the test."""
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def server_factory(loop_thread: LoopThread) -> Iterator[ServerFactory]:
    """Build and start in-process servers (see :func:`start_server`); all are stopped at
    the end of the test."""
    started: list[RunningServer] = []

    def start(settings: Settings | None = None, **kwargs: Any) -> RunningServer:
        running = start_server(loop_thread, settings, **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(0)


@pytest.fixture
def server(server_factory: ServerFactory) -> RunningServer:
    """A running server with the in-memory store."""
    return server_factory()


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> payments_pb2_grpc.PaymentServiceStub:
    return payments_pb2_grpc.PaymentServiceStub(channel)


def start_server_process(
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = ("-m", "payments_service.server"),
    *,
    fd_limit: int | None = None,
) -> subprocess.Popen[str]:
    """Start ``python -m payments_service.server`` with ``env`` added to a clean environment.

    ``fd_limit`` sets its RLIMIT_NOFILE (soft and hard) before it starts.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full_env["METRICS_PORT"] = "0"  # unless a test asks for /metrics: 9464 may be taken
    full_env.update(env or {})

    def limit_descriptors() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    return subprocess.Popen(
        [sys.executable, *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        preexec_fn=limit_descriptors,
    )
