"""Graceful shutdown at the default settings, seen by three gRPC stacks.

The server runs with MAX_WORKERS, GRACE_PERIOD_SECONDS and DATABASE_TIMEOUT_SECONDS at
their defaults and stores payments in PostgreSQL through a TcpProxy the test pauses. The
calls sent first are held inside the server for real when SIGTERM arrives (on a worker,
or queued behind the busy ones), and so is a readiness ping: the monitor pings every
second. A stream of calls, one every few milliseconds, runs from just before SIGTERM to
just before the proxy lets the database answer again (well inside
DATABASE_TIMEOUT_SECONDS), so calls arrive while the server stops accepting and while it
drains.

Promises: every call in flight at SIGTERM completes OK; a call arriving later gets
UNAVAILABLE, which clients retry (never CANCELLED, never RESOURCE_EXHAUSTED), and from
shortly after SIGTERM on every call does; the process exits 0 within the grace period.
The clients: grpcio, and from Node (tests/interop/node) @grpc/grpc-js and Connect's
@connectrpc/connect-node speaking the gRPC protocol.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import pytest
from psycopg.conninfo import make_conninfo

from payments_service import payments_pb2, payments_pb2_grpc
from tests.support.environment import ROOT, require
from tests.support.network import free_port
from tests.support.postgres import port_of, rows
from tests.support.processes import CapturedServer, wait_until_ready
from tests.support.proxy import TcpProxy
from tests.support.requests import valid_request

pytestmark = pytest.mark.postgres

IN_FLIGHT_CALLS = 24  # at least 20, and more than the default MAX_WORKERS (10): some queue
SETTLE_SECONDS = 2.0  # from the in-flight calls to SIGTERM: a readiness ping waits by then
STREAM_LEAD_SECONDS = 0.1  # the stream starts this long before SIGTERM ...
STREAM_SECONDS = 0.8  # ... and sends for this long
STREAM_INTERVAL_SECONDS = 0.01
REFUSED_AFTER_SECONDS = 0.5  # calls sent this long after SIGTERM or later: all UNAVAILABLE
RELEASE_AFTER_SIGTERM_SECONDS = 0.9  # the database answers again, after the stream
DEFAULT_GRACE_PERIOD_SECONDS = 5.0  # GRACE_PERIOD_SECONDS is left at its default
EXIT_SLACK_SECONDS = 1.0
OBSERVE_SECONDS = 4.0  # how long past the limit the test waits, to report how late an exit is
CALL_DEADLINE_SECONDS = 10.0
GRPCIO_CHANNELS = 4

NODE_DIR = ROOT / "tests" / "interop" / "node"
NODE_SCRIPT = NODE_DIR / "shutdown_client.mjs"
PROTO = ROOT / "proto" / "payments.proto"
NODE_MAJOR_VERSION = 20


@dataclass(frozen=True)
class Ended:
    code: str  # a grpc.StatusCode name
    seconds: float
    sent: float = 0.0  # stream calls: seconds after the stream began


@dataclass(frozen=True)
class Results:
    in_flight: list[Ended]
    stream: list[Ended]


class ShutdownClient(Protocol):
    def send_in_flight(self) -> None: ...
    def start_stream(self) -> None: ...
    def results(self) -> Results: ...
    def close(self) -> None: ...


class GrpcioClient:
    """The stock Python client: a few channels, a future per call."""

    def __init__(self, port: int) -> None:
        self._channels = [
            grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(GRPCIO_CHANNELS)
        ]
        self._stubs = [payments_pb2_grpc.PaymentServiceStub(c) for c in self._channels]
        for stub in self._stubs:  # every channel is connected before the test starts
            stub.Health(payments_pb2.HealthRequest(), timeout=5)
        self._in_flight: list[Any] = []
        self._stream: list[Any] = []
        self._ended: dict[int, float] = {}
        self._streamer: threading.Thread | None = None

    def _send(self, name: str, index: int, sent: float = 0.0) -> tuple[float, float, Any]:
        started = time.monotonic()
        future = self._stubs[index % len(self._stubs)].RequestPayment.future(
            valid_request(f"grpcio-{name}-{index}-{uuid.uuid4().hex}"),
            timeout=CALL_DEADLINE_SECONDS,
        )

        def ended(done: grpc.Future[Any]) -> None:
            self._ended.setdefault(id(done), time.monotonic())

        future.add_done_callback(ended)
        return sent, started, future

    def send_in_flight(self) -> None:
        self._in_flight = [self._send("held", i) for i in range(IN_FLIGHT_CALLS)]

    def start_stream(self) -> None:
        def stream() -> None:
            begin = time.monotonic()
            index = 0
            while (sent := time.monotonic() - begin) < STREAM_SECONDS:
                self._stream.append(self._send("stream", index, sent))
                index += 1
                time.sleep(STREAM_INTERVAL_SECONDS)

        self._streamer = threading.Thread(target=stream)
        self._streamer.start()

    def _ended_as(self, sent: float, started: float, future: Any) -> Ended:
        error = future.exception(timeout=CALL_DEADLINE_SECONDS + 5)
        code = "OK" if error is None else error.code().name
        return Ended(code, self._ended.get(id(future), time.monotonic()) - started, sent)

    def results(self) -> Results:
        if self._streamer is not None:
            self._streamer.join()
        return Results(
            [self._ended_as(*call) for call in self._in_flight],
            [self._ended_as(*call) for call in self._stream],
        )

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


@dataclass(frozen=True)
class NodeSetup:
    node: str
    descriptor_set: Path


class NodeClient:
    """tests/interop/node/shutdown_client.mjs, driven through its stdin and stdout."""

    def __init__(self, setup: NodeSetup, stack: str, port: int) -> None:
        self._stack = stack
        self._process = subprocess.Popen(
            [
                setup.node,
                str(NODE_SCRIPT),
                f"--client={stack}",
                f"--target=127.0.0.1:{port}",
                f"--proto={PROTO}",
                f"--descriptor-set={setup.descriptor_set}",
                f"--in-flight={IN_FLIGHT_CALLS}",
                f"--stream-ms={round(STREAM_SECONDS * 1000)}",
                f"--interval-ms={round(STREAM_INTERVAL_SECONDS * 1000)}",
                f"--deadline-ms={round(CALL_DEADLINE_SECONDS * 1000)}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._output.append(line)
            if line.startswith("{"):
                self._lines.put(line)

    def _event(self, name: str, timeout: float) -> dict[str, Any]:
        try:
            event: dict[str, Any] = json.loads(self._lines.get(timeout=timeout))
        except queue.Empty:
            pytest.fail(f"the {self._stack} client printed no {name!r}: {''.join(self._output)}")
        assert event["event"] == name, "".join(self._output)
        return event

    def send_in_flight(self) -> None:
        self._event("sent", timeout=15)

    def start_stream(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write("stream\n")
        self._process.stdin.flush()

    def results(self) -> Results:
        done = self._event("done", timeout=CALL_DEADLINE_SECONDS + 10)

        def ended(call: dict[str, Any]) -> Ended:
            return Ended(str(call["code"]), call["ms"] / 1000, call.get("at", 0) / 1000)

        return Results([ended(c) for c in done["in_flight"]], [ended(c) for c in done["stream"]])

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(10)
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture(scope="session")
def node_setup(tmp_path_factory: pytest.TempPathFactory) -> NodeSetup:
    """Node with the locked packages of tests/interop/node (``npm ci`` when missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    require(node is not None and npm is not None, "node and npm are not installed")
    assert node is not None
    assert npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    require(major >= NODE_MAJOR_VERSION, f"Node {NODE_MAJOR_VERSION}+ is needed, not {major}")
    installed = NODE_DIR / "node_modules" / ".package-lock.json"  # written by npm ci
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        result = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        require(result.returncode == 0, f"npm ci in {NODE_DIR} failed: {result.stderr[-2000:]}")
    # What Connect's generated code would embed: the API's FileDescriptorSet.
    descriptor_set = tmp_path_factory.mktemp("proto") / "payments.binpb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO.parent}",
            "--include_imports",
            f"--descriptor_set_out={descriptor_set}",
            PROTO.name,
        ],
        check=True,
    )
    return NodeSetup(node, descriptor_set)


@dataclass
class PausedServer:
    server: CapturedServer
    port: int
    proxy: TcpProxy
    database_url: str


@pytest.fixture
def paused_server(database_url: str) -> Iterator[PausedServer]:
    """A server at its default settings, on PostgreSQL behind a proxy (passing for now)."""
    proxy = TcpProxy(port_of(database_url))
    proxy.start()
    port = free_port()
    env = {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "STORAGE_BACKEND": "postgres",
        "DATABASE_URL": make_conninfo(database_url, host="127.0.0.1", port=proxy.port),
    }
    with CapturedServer(env) as server:
        try:
            wait_until_ready(port)
        except TimeoutError:
            pytest.fail(f"the server did not become ready:\n{server.output()}")
        yield PausedServer(server, port, proxy, database_url)
    proxy.cut()


@pytest.mark.parametrize("stack", ["grpcio", "grpc-js", "connect"])
def test_sigterm_at_default_settings_completes_calls_in_flight_and_refuses_later_ones(
    stack: str, paused_server: PausedServer, request: pytest.FixtureRequest
) -> None:
    setup = None if stack == "grpcio" else request.getfixturevalue("node_setup")
    port, proxy = paused_server.port, paused_server.proxy
    client: ShutdownClient = GrpcioClient(port) if setup is None else NodeClient(setup, stack, port)
    try:
        proxy.pause()  # every INSERT and ping now waits in the proxy
        client.send_in_flight()
        time.sleep(SETTLE_SECONDS - STREAM_LEAD_SECONDS)
        client.start_stream()
        time.sleep(STREAM_LEAD_SECONDS)
        release = threading.Timer(RELEASE_AFTER_SIGTERM_SECONDS, proxy.release)
        release.start()
        exited_after = paused_server.server.signal_and_wait(
            DEFAULT_GRACE_PERIOD_SECONDS + EXIT_SLACK_SECONDS + OBSERVE_SECONDS
        )
        release.join()
        results = client.results()
    finally:
        client.close()
    output = paused_server.server.output()

    def after_sigterm(call: Ended) -> float:
        return call.sent - STREAM_LEAD_SECONDS

    around = [c for c in results.stream if after_sigterm(c) < REFUSED_AFTER_SECONDS]
    later = [c for c in results.stream if after_sigterm(c) >= REFUSED_AFTER_SECONDS]
    first_refused = min((after_sigterm(c) for c in results.stream if c.code != "OK"), default=None)
    summary = (
        f"{stack}: in flight at SIGTERM {dict(Counter(c.code for c in results.in_flight))}; "
        f"sent up to {REFUSED_AFTER_SECONDS} s after it {dict(Counter(c.code for c in around))}, "
        f"later {dict(Counter(c.code for c in later))}, first refused "
        f"{first_refused if first_refused is None else round(first_refused, 3)} s after it; "
        f"exit {paused_server.server.process.returncode} after {exited_after} s"
    )
    print(f"\n{summary}")
    # The held calls were in the server when SIGTERM came: none had ended before it.
    assert min(c.seconds for c in results.in_flight) >= SETTLE_SECONDS, results.in_flight
    assert later, "the stream sent nothing after SIGTERM"
    assert Counter(c.code for c in results.in_flight) == {"OK": IN_FLIGHT_CALLS}, summary
    assert {c.code for c in around} <= {"OK", "UNAVAILABLE"}, summary
    assert {c.code for c in later} == {"UNAVAILABLE"}, summary
    assert exited_after is not None, f"{summary}\n{output[-3000:]}"
    assert exited_after <= DEFAULT_GRACE_PERIOD_SECONDS + EXIT_SLACK_SECONDS, summary
    assert paused_server.server.process.returncode == 0, f"{summary}\n{output[-3000:]}"
    # Each acknowledged call stored its payment; no refused one did.
    acknowledged = sum(c.code == "OK" for c in results.in_flight + results.stream)
    assert rows(paused_server.database_url, "SELECT count(*) FROM payments") == [(acknowledged,)]
