"""PostgreSQL for tests: a throw-away database per use, and a TCP proxy that can fail it.

The server is DATABASE_URL from the environment, or the local one on 127.0.0.1:5432.
Without it the tests skip locally and fail under CI=true (see ``require``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from payments_service.storage.migrate import apply_migrations
from payments_service.transport.servicer import SERVICE_NAME as SERVICE
from tests.conftest import require

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_url() -> str:
    """The PostgreSQL the tests use (a database on it that they may create databases from)."""
    return os.environ.get("DATABASE_URL") or DEFAULT_URL


def require_postgres() -> str:
    """The server URL, after checking that it answers (skip locally, fail under CI)."""
    url = server_url()
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        require(False, f"PostgreSQL is not reachable ({type(error).__name__}: {error})")
    return url


def with_database(url: str, dbname: str, **overrides: str | int) -> str:
    """``url`` pointing at ``dbname`` (and any other conninfo overrides)."""
    return make_conninfo(url, dbname=dbname, **overrides)


@contextlib.contextmanager
def fresh_database(*, migrate: bool = True) -> Iterator[str]:
    """A new, empty database (migrated unless asked not to), dropped afterwards."""
    admin_url = require_postgres()
    name = f"payments_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = with_database(admin_url, name)
    try:
        if migrate:
            apply_migrations(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def port_of(url: str) -> tuple[str, int]:
    details = conninfo_to_dict(url)
    return str(details.get("host") or "127.0.0.1"), int(details.get("port") or 5432)


class TcpProxy:
    """Forwards a local port to the database, in a mode the test sets for every
    connection, open or new:

    - pass (from ``start()``, and after ``restore()``): bytes flow both ways.
    - ``cut()``: every connection is dropped and new ones are refused (a partition, a
      database restart).
    - ``pause()``: bytes are held, unread, both ways; ``release()`` delivers them in order
      and passes again, losing nothing (a database process stopped, then resumed).
    - ``blackhole()``: what is sent is read and dropped and nothing ever answers; new
      connections are accepted too (a hung pooler or sidecar: the peer's kernel
      acknowledges every byte, so no TCP timeout fires). ``restore()`` closes these
      connections, which lost bytes, and passes again.
    - ``trickle(interval)``: one byte every ``interval`` seconds (a database that
      answers, far too slowly).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._changed = threading.Condition()  # guards the mode and the connections
        self._mode = "pass"
        self._interval = 0.0
        self._connections: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Close the listener (new connections are refused) and every open connection."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join()
        self._set_mode("pass")
        self._close_connections()

    def restore(self) -> None:
        """Pass bytes again: listen again after ``cut()``, drop blackholed connections."""
        if self._mode == "blackhole":
            self._close_connections()
        self._set_mode("pass")
        if self._listener is None:
            self.start()

    def pause(self) -> None:
        self._set_mode("pause")

    release = restore

    def blackhole(self) -> None:
        self._set_mode("blackhole")

    def trickle(self, interval: float) -> None:
        self._set_mode("trickle", interval)

    def _set_mode(self, mode: str, interval: float = 0.0) -> None:
        with self._changed:
            self._mode, self._interval = mode, interval
            self._changed.notify_all()

    def _close_connections(self) -> None:
        with self._changed:
            for sock in self._connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._changed:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(a, selectors.EVENT_READ, b)
            selector.register(b, selectors.EVENT_READ, a)
            while True:
                for key, _ in selector.select(timeout=0.5):
                    with self._changed:
                        while self._mode == "pause":
                            self._changed.wait()
                        mode, interval = self._mode, self._interval
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(1 if mode == "trickle" else 65536)
                    if not data:
                        return
                    if mode != "blackhole":
                        key.data.sendall(data)
                    time.sleep(interval)
        except (OSError, ValueError):
            return  # cut() or restore() closed the sockets
        finally:
            selector.close()
            for sock in (a, b):
                sock.close()


def replica_env(url: str, port: int, **extra: str) -> dict[str, str]:
    """The environment of a server process on ``port`` using the database at ``url``."""
    return {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "STORAGE_BACKEND": "postgres",
        "DATABASE_URL": url,
        "MAX_WORKERS": "16",
        "DATABASE_POOL_MAX_SIZE": "16",
        "LOG_LEVEL": "WARNING",  # nobody reads the pipe until the end: keep it small
        **extra,
    }


def wait_until_ready(port: int, timeout: float = 20.0) -> None:
    """Block until the API's readiness (grpc.health.v1 for the service) says SERVING."""
    wait_for_health(port, SERVING, timeout)


def wait_for_health(port: int, status: int, timeout: float, service: str = SERVICE) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                last = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
            except grpc.RpcError as error:
                last = error.code()
            if last == status:
                return
            time.sleep(0.1)
    raise TimeoutError(f"health of {service!r} on port {port} is {last}, not {status}")


def stop_process(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    """Stop a server process (SIGKILL if ``sig`` is SIGKILL) and return its output."""
    if process.poll() is None:
        process.send_signal(sig)
    output, _ = process.communicate(timeout=30)
    return output


def rows(url: str, query: str, *params: object) -> list[tuple[object, ...]]:
    """Run a read-only query directly against the database."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]
