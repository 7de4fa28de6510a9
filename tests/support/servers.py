"""In-process servers for tests: the service on an event loop of its own, started on a
free loopback port, called with ordinary blocking gRPC clients."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import uvloop

from payments_service.config import Settings
from payments_service.server import Server, build_server
from tests.support.certificates import Issued
from tests.support.network import free_port

T = TypeVar("T")


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


def start_tls_server(
    server_factory: ServerFactory, certificate: Issued, **overrides: Any
) -> RunningServer:
    """A server whose API port speaks TLS with ``certificate`` (``tls_client_ca_file``
    among ``overrides`` makes it mutual TLS)."""
    settings = make_settings(
        port=free_port(),
        tls_cert_file=certificate.certificate_file,
        tls_key_file=certificate.key_file,
        **overrides,
    )
    return server_factory(settings)
