"""A database that stops answering, through a TcpProxy the test controls.

Unlike a cut (tests/integration/test_postgres_outage.py), nothing here fails fast: in
``blackhole`` mode the proxy takes every byte and never answers (a hung PostgreSQL, pooler
or sidecar: the peer's kernel acknowledges, so no TCP timeout fires), in ``trickle`` mode
it answers a byte at a time. The server process runs with DATABASE_TIMEOUT_SECONDS=2 and a
HEALTH_PORT for the probes, and logs in JSON.

Promises: calls fail UNAVAILABLE within DATABASE_TIMEOUT_SECONDS + 1 s; readiness
(``payments.v1.PaymentService`` on HEALTH_PORT) turns NOT_SERVING within 5 s while
liveness (``""``) stays SERVING; a WARNING says the database does not answer; the service
recovers when the database answers again; SIGTERM ends the process within the grace period.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.conninfo import make_conninfo

from payments_service import payments_pb2_grpc
from tests.support.network import free_port
from tests.support.postgres import port_of
from tests.support.processes import (
    NOT_SERVING,
    SERVICE,
    SERVING,
    CapturedServer,
    wait_for_health,
    wait_until_ready,
)
from tests.support.proxy import TcpProxy
from tests.support.requests import valid_request

pytestmark = pytest.mark.postgres

DATABASE_TIMEOUT_SECONDS = 2.0
ANSWER_SLACK_SECONDS = 1.0  # a call fails within DATABASE_TIMEOUT_SECONDS + this
READINESS_SECONDS = 5.0  # readiness is NOT_SERVING this long after the hang began
RECOVERY_SECONDS = 5.0  # readiness is SERVING again this long after the database is back
DEFAULT_GRACE_PERIOD_SECONDS = 5.0  # GRACE_PERIOD_SECONDS is left at its default
EXIT_SLACK_SECONDS = 1.0
OBSERVE_SECONDS = 1.0  # how long past a limit the test waits, to report how late things are
TRICKLE_INTERVAL_SECONDS = 0.2  # one byte every 0.2 s: a 100-byte answer takes 20 s
CALLS_DURING_HANG = 4  # sent together once the hang began
CALLS_AFTER_RECOVERY = 5
TRAFFIC_THREADS = 4  # "under load": clients calling back to back when the hang begins
TRAFFIC_OK_BEFORE_HANG = 20
PROBE_INTERVAL_SECONDS = 0.1
PROBE_TIMEOUT_SECONDS = 1.0  # a kubelet probe's default timeout
CALL_DEADLINE_SECONDS = DATABASE_TIMEOUT_SECONDS + ANSWER_SLACK_SECONDS + OBSERVE_SECONDS
WARNING_LEVELS = {"WARNING", "ERROR", "CRITICAL"}


@dataclass(frozen=True)
class Call:
    started: float  # time.monotonic()
    seconds: float
    code: grpc.StatusCode


@dataclass
class Server:
    process: CapturedServer
    port: int
    health_port: int
    proxy: TcpProxy
    stub: payments_pb2_grpc.PaymentServiceStub

    def call(self) -> Call:
        started = time.monotonic()
        try:
            self.stub.RequestPayment(valid_request(), timeout=CALL_DEADLINE_SECONDS)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        return Call(started, time.monotonic() - started, code)

    def hang(self, mode: str) -> None:
        if mode == "trickle":
            self.proxy.trickle(TRICKLE_INTERVAL_SECONDS)
        else:
            self.proxy.blackhole()


@pytest.fixture
def server(database_url: str) -> Iterator[Server]:
    """A server process on PostgreSQL through a proxy (passing bytes until told otherwise)."""
    proxy = TcpProxy(port_of(database_url))
    proxy.start()
    port, health_port = free_port(), free_port()
    env = {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "HEALTH_PORT": str(health_port),
        "STORAGE_BACKEND": "postgres",
        "DATABASE_URL": make_conninfo(database_url, host="127.0.0.1", port=proxy.port),
        "DATABASE_TIMEOUT_SECONDS": str(DATABASE_TIMEOUT_SECONDS),
        "LOG_FORMAT": "json",
    }
    with (
        CapturedServer(env) as process,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield Server(
            process, port, health_port, proxy, payments_pb2_grpc.PaymentServiceStub(channel)
        )
    proxy.cut()


def _wait_ready(server: Server) -> None:
    try:
        wait_until_ready(server.port)
    except TimeoutError:
        pytest.fail(f"the server did not become ready:\n{server.process.output()}")


@dataclass
class Probes:
    """What a kubelet would see on HEALTH_PORT, probed every PROBE_INTERVAL_SECONDS."""

    readiness: list[tuple[float, object]] = field(default_factory=list)
    liveness: list[tuple[float, object]] = field(default_factory=list)

    def first_not_serving(self, since: float) -> float | None:
        return next((t - since for t, s in self.readiness if t >= since and s == NOT_SERVING), None)


@dataclass
class Traffic:
    """Clients calling back to back on their own threads until stopped."""

    server: Server
    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, count: int) -> None:
        def run() -> None:
            while not self.stop.is_set():
                self.calls.append(self.server.call())

        self.threads = [threading.Thread(target=run) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(CALL_DEADLINE_SECONDS + 5)


def _probe(port: int, probes: Probes, stop: threading.Event) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            for service, seen in ((SERVICE, probes.readiness), ("", probes.liveness)):
                at = time.monotonic()
                try:
                    status: object = stub.Check(
                        health_pb2.HealthCheckRequest(service=service),
                        timeout=PROBE_TIMEOUT_SECONDS,
                    ).status
                except grpc.RpcError as error:
                    status = error.code()
                seen.append((at, status))
            stop.wait(PROBE_INTERVAL_SECONDS)


def _warnings_about_the_database(output: bytes) -> list[str]:
    """Messages of the JSON log lines at WARNING or above that mention the database."""
    found = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # grpc core writes a few lines of its own
        if not isinstance(entry, dict):
            continue
        message = str(entry.get("message", ""))
        if entry.get("level") in WARNING_LEVELS and "database" in message.lower():
            found.append(message)
    return found


def _hung_calls(server: Server, traffic: Traffic | None) -> list[Call]:
    with futures.ThreadPoolExecutor(CALLS_DURING_HANG) as pool:
        calls = list(pool.map(lambda _: server.call(), range(CALLS_DURING_HANG)))
    if traffic is not None:
        traffic.join()
        calls += traffic.calls
    return calls


@pytest.mark.parametrize(
    ("mode", "when"),
    [
        ("blackhole", "at start"),  # the server never had a connection
        ("blackhole", "pooled"),  # calls succeeded before; the pool holds idle connections
        ("blackhole", "under load"),  # calls in flight when the hang begins
        ("trickle", "pooled"),
        ("trickle", "under load"),
    ],
)
def test_a_database_that_stops_answering_fails_calls_fast_and_recovers(
    server: Server, mode: str, when: str
) -> None:
    traffic, logged_before = None, 0
    if when == "at start":
        server.hang(mode)
        wait_for_health(server.port, NOT_SERVING, timeout=20)  # up, never ready
    else:
        _wait_ready(server)
        assert server.call().code is grpc.StatusCode.OK
        if when == "under load":
            traffic = Traffic(server)
            traffic.start(TRAFFIC_THREADS)
            deadline = time.monotonic() + 10
            while sum(c.code is grpc.StatusCode.OK for c in traffic.calls) < TRAFFIC_OK_BEFORE_HANG:
                assert time.monotonic() < deadline, "no traffic got through before the hang"
                time.sleep(0.01)
        logged_before = len(server.process.output_bytes())
    probes, stop_probing = Probes(), threading.Event()
    prober = threading.Thread(target=_probe, args=(server.health_port, probes, stop_probing))
    hang_began = time.monotonic()
    server.hang(mode)
    prober.start()
    try:
        calls = _hung_calls(server, traffic)
        while probes.first_not_serving(hang_began) is None:
            if time.monotonic() - hang_began > READINESS_SECONDS + OBSERVE_SECONDS:
                break
            time.sleep(PROBE_INTERVAL_SECONDS)
    finally:
        stop_probing.set()
        prober.join()
    not_serving_after = probes.first_not_serving(hang_began)
    warnings = _warnings_about_the_database(server.process.output_bytes()[logged_before:])

    during = [c for c in calls if c.started >= hang_began]
    slowest = max(c.seconds for c in calls)
    summary = (
        f"{mode} {when}: calls during the hang "
        f"{sorted({c.code.name for c in during})}, slowest call {slowest:.2f} s; readiness "
        f"NOT_SERVING after {not_serving_after} s; liveness seen "
        f"{sorted({str(s) for _, s in probes.liveness})}; database warnings {warnings[:3]}"
    )
    print(f"\n{summary}")
    assert {c.code for c in during} == {grpc.StatusCode.UNAVAILABLE}, summary
    # Calls in flight as the hang began may still have made it.
    assert {c.code for c in calls} <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, summary
    assert slowest <= DATABASE_TIMEOUT_SECONDS + ANSWER_SLACK_SECONDS, summary
    assert not_serving_after is not None, summary
    assert not_serving_after <= READINESS_SECONDS, summary
    assert probes.liveness, summary
    assert {s for _, s in probes.liveness} == {SERVING}, summary
    assert warnings, f"{summary}\n{server.process.output()[-3000:]}"

    server.proxy.restore()
    recovering = time.monotonic()
    try:
        wait_for_health(server.health_port, SERVING, timeout=RECOVERY_SECONDS)
    except TimeoutError:
        pytest.fail(f"readiness not SERVING {RECOVERY_SECONDS} s after the database came back")
    print(f"readiness SERVING {time.monotonic() - recovering:.2f} s after the database came back")
    after = [server.call() for _ in range(CALLS_AFTER_RECOVERY)]
    assert [c.code for c in after] == [grpc.StatusCode.OK] * CALLS_AFTER_RECOVERY, after


@pytest.mark.parametrize("mode", ["blackhole", "trickle"])
def test_sigterm_while_the_database_hangs_ends_the_process_within_the_grace_period(
    server: Server, mode: str
) -> None:
    _wait_ready(server)
    assert server.call().code is grpc.StatusCode.OK
    server.hang(mode)
    with futures.ThreadPoolExecutor(CALLS_DURING_HANG) as pool:
        in_flight = [pool.submit(server.call) for _ in range(CALLS_DURING_HANG)]
        time.sleep(0.5)  # the calls wait on the database
        exited_after = server.process.signal_and_wait(
            DEFAULT_GRACE_PERIOD_SECONDS + EXIT_SLACK_SECONDS + OBSERVE_SECONDS
        )
        calls = [f.result() for f in in_flight]
    summary = (
        f"{mode}: exit {server.process.process.returncode} after {exited_after} s "
        f"(None: still running, killed); calls in flight "
        f"{[(c.code.name, round(c.seconds, 2)) for c in calls]}"
    )
    print(f"\n{summary}")
    assert exited_after is not None, f"{summary}\n{server.process.output()[-3000:]}"
    assert exited_after <= DEFAULT_GRACE_PERIOD_SECONDS + EXIT_SLACK_SECONDS, summary
    assert server.process.process.returncode == 0, summary
    assert {c.code for c in calls} == {grpc.StatusCode.UNAVAILABLE}, summary
    assert max(c.seconds for c in calls) <= DATABASE_TIMEOUT_SECONDS + ANSWER_SLACK_SECONDS
