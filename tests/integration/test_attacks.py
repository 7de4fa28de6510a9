"""One client must not take the service down (issue 10, items 1-4 and 10).

Each test starts the real server as a process (``python -m payments_service``, configured
through environment variables only, see tests/support/server_process.py) and attacks it
on loopback with raw HTTP/2 (tests/support/h2_attacker.py) or a stock grpcio client,
while well-behaved clients (tests/support/clients.py) check what a user and the kubelet
would see. Every attack is bounded in count and time. The numbers below are the contract.
"""

from __future__ import annotations

import contextlib
import functools
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.support import clients
from tests.support.environment import require
from tests.support.h2_attacker import (
    Connection,
    connect,
    connected,
    idle_connections,
)
from tests.support.requests import valid_request
from tests.support.server_process import ServerProcess, running_server

# -- The contract: every threshold the tests assert ------------------------------------
#: A normal RequestPayment call must succeed within this (items 1, 4).
CALL_DEADLINE_SECONDS = 2.0
#: A probe (grpc.health.v1 Check on a fresh connection) must answer SERVING within this.
PROBE_DEADLINE_SECONDS = 1.0
#: Normal calls and probes made at once while an attack is on.
NORMAL_CALLS, PROBES = 5, 4
#: How long the server gets to take up an attack before the normal clients start.
SETTLE_SECONDS = 0.3
#: Item 1: streams that send HEADERS and never a body (no grpc-timeout) ...
HUNG_STREAM_COUNTS = (20, 1000)
#: ... spread over connections, at most this many on one (fewer if the server advertises
#: a lower MAX_CONCURRENT_STREAMS: the attacker then simply opens more connections).
STREAMS_PER_CONNECTION = 100
#: Item 1 as well: streams whose HEADERS carry END_STREAM, so they never bring a message.
HALF_CLOSED_STREAMS = 1000
#: Item 1: stock grpcio calls whose request iterator blocks; open reflection streams
#: per reflection version.
BLOCKED_ITERATOR_CALLS = 20
REFLECTION_STREAMS = 10
#: Item 2: GRACE_PERIOD_SECONDS given to the server; SIGTERM must end the process within
#: it plus the slack, with a zero-window Watch open.
WATCH_GRACE_PERIOD_SECONDS = 2.0
SHUTDOWN_SLACK_SECONDS = 1.0
HEALTH_CALLS = 10
#: Item 3: valid calls replaying one key from a client whose window is zero, sent at this
#: rate whatever the server advertises; RSS may grow by less than the limit, and may not
#: grow by more than the slack once the client has left.
ZERO_WINDOW_CALLS = 4000
ZERO_WINDOW_CALLS_PER_SECOND = 2000
RSS_GROWTH_LIMIT_MIB = 40.0
RSS_FLAT_SLACK_MIB = 4.0
#: Item 4: rapid reset (CVE-2023-44487) from this many connections for this long.
RAPID_RESET_CONNECTIONS = 4
RAPID_RESET_SECONDS = 3.0
RAPID_RESET_BATCH = 50  # streams per write
PROBE_INTERVAL_SECONDS = 0.1
#: Share of normal calls and of probes that must succeed during the attack; the lower
#: share suffices when every abusive connection was sent a GOAWAY.
SUCCESS_SHARE = 0.99
SUCCESS_SHARE_WITH_GOAWAY = 0.95
#: Item 10: idle connections to /metrics, opened at this rate; the process may gain at
#: most this many threads and this much RSS, and /metrics must answer within the time.
METRICS_IDLE_CONNECTIONS = 1500
CONNECTIONS_PER_SECOND = 1000
METRICS_THREAD_GROWTH_LIMIT = 50
METRICS_RSS_GROWTH_LIMIT_MIB = 20.0
METRICS_ANSWER_SECONDS = 2.0
#: Item 10: idle connections to PORT under a process fd limit; the API must answer again
#: within the recovery time, counted from when the last one was opened.
FD_LIMIT = 1024
PORT_IDLE_CONNECTIONS = 1124
API_RECOVERY_SECONDS = 5.0

REQUEST_PAYMENT = "/payments.v1.PaymentService/RequestPayment"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION_INFO = "/grpc.reflection.{}.ServerReflection/ServerReflectionInfo"
REFLECTION_VERSIONS = ("v1alpha", "v1")
#: Where an attack on each port goes: the unary method the port serves.
TARGETS = {"PORT": ("port", REQUEST_PAYMENT), "HEALTH_PORT": ("health_port", HEALTH_CHECK)}
ALL_WELL = {"RequestPayment": ["OK"] * NORMAL_CALLS, "probes": ["SERVING"] * PROBES}

Attack = Callable[[ServerProcess], contextlib.AbstractContextManager[Any]]


def _target(server: ServerProcess, target: str) -> tuple[int, str]:
    attribute, path = TARGETS[target]
    return int(getattr(server, attribute)), path


def _calls_and_probes(server: ServerProcess) -> dict[str, list[str]]:
    """RequestPayment calls on PORT and probes on HEALTH_PORT, all at once."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        calls = pool.submit(clients.payment_calls, server.port, NORMAL_CALLS, CALL_DEADLINE_SECONDS)
        probes = pool.submit(clients.probes, server.health_port, PROBES, PROBE_DEADLINE_SECONDS)
        return {"RequestPayment": calls.result(), "probes": probes.result()}


@contextlib.contextmanager
def _hung_streams(port: int, path: str, count: int, *, half_close: bool = False) -> Iterator[str]:
    """``count`` streams that send HEADERS (no grpc-timeout) and never a message; with
    ``half_close`` the HEADERS also end the client's side (END_STREAM)."""
    connections: list[Connection] = []
    try:
        left = count
        while left > 0:
            connection = connect(port)
            connections.append(connection)
            limit = connection.max_concurrent_streams or STREAMS_PER_CONNECTION
            for _ in range(min(left, limit, STREAMS_PER_CONNECTION)):
                connection.open_stream(path, end_stream=half_close)
                left -= 1
        time.sleep(SETTLE_SECONDS)
        advertised = connections[0].max_concurrent_streams
        yield f"{count} streams on {len(connections)} connections (limit {advertised})"
    finally:
        for connection in connections:
            connection.close()


def _raw(message: bytes) -> bytes:
    """No (de)serialisation: the bytes as they are, as grpcio's default of None does."""
    return message


@contextlib.contextmanager
def _blocked_iterator_calls(port: int, path: str) -> Iterator[str]:
    """Stock grpcio calls on a unary method through ``channel.stream_unary``, each with a
    request iterator that blocks (grpcio sends the HEADERS, then waits for a message)."""
    release = threading.Event()

    def requests() -> Iterator[bytes]:
        release.wait(30)
        yield from ()

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.stream_unary(path, request_serializer=_raw, response_deserializer=_raw)
        calls: list[grpc.Future[Any]] = [
            method.future(requests()) for _ in range(BLOCKED_ITERATOR_CALLS)
        ]
        time.sleep(SETTLE_SECONDS)
        try:
            yield f"{len(calls)} grpcio calls with a blocked request iterator"
        finally:
            for call in calls:
                call.cancel()
            release.set()


@contextlib.contextmanager
def _open_reflection_streams(port: int) -> Iterator[str]:
    """Per reflection version, streams that ask once (list services) and then stay open
    (a version the server does not serve answers UNIMPLEMENTED and holds nothing)."""
    request = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    with connected(port) as connection:
        opened = {}
        for version in REFLECTION_VERSIONS:
            opened[version] = [
                connection.open_stream(REFLECTION_INFO.format(version))
                for _ in range(REFLECTION_STREAMS)
            ]
            for stream_id in opened[version]:
                connection.send_message(stream_id, request, end_stream=False)
        connection.listen(SETTLE_SECONDS)
        answered = {
            version: sum(1 for s in ids if connection.streams[s].messages())
            for version, ids in opened.items()
        }
        yield f"reflection streams open and answered per version: {answered}"


def _on(
    target: str, attack: Callable[[int, str], contextlib.AbstractContextManager[Any]]
) -> Attack:
    """``attack`` on the port and method of ``target`` of whatever server it is given."""
    return lambda server: attack(*_target(server, target))


ATTACKS: dict[str, Attack] = {
    **{
        f"{count} hung streams on {target}": _on(
            target, functools.partial(_hung_streams, count=count)
        )
        for target in TARGETS
        for count in HUNG_STREAM_COUNTS
    },
    # Holds today (UNIMPLEMENTED at once); grpc.aio 1.85 sends such a call no status at
    # all, so it stays open and counts against the server's limits until the client leaves.
    **{
        f"{HALF_CLOSED_STREAMS} streams half-closed without a message on {target}": _on(
            target,
            functools.partial(_hung_streams, count=HALF_CLOSED_STREAMS, half_close=True),
        )
        for target in TARGETS
    },
    **{
        f"grpcio blocked iterators on {target}": _on(target, _blocked_iterator_calls)
        for target in TARGETS
    },
    "open reflection streams": lambda server: _open_reflection_streams(server.port),
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_clients_that_never_finish_a_request_hold_up_no_call_and_no_probe(attack: Attack) -> None:
    with running_server() as server, attack(server) as what:
        seen = _calls_and_probes(server)
    print(f"attack: {what}; normal clients saw {seen}")
    assert seen == ALL_WELL


@pytest.mark.parametrize("target", TARGETS)
def test_a_health_watch_that_never_reads_freezes_no_probe_call_or_shutdown(target: str) -> None:
    grace = WATCH_GRACE_PERIOD_SECONDS
    with running_server({"GRACE_PERIOD_SECONDS": str(grace)}) as server:
        port, _ = _target(server, target)
        with connected(port, initial_window=0) as watcher:
            watch = watcher.open_stream(HEALTH_WATCH)
            watcher.send_message(watch, health_pb2.HealthCheckRequest().SerializeToString())
            watcher.listen(SETTLE_SECONDS)
            with ThreadPoolExecutor(max_workers=3) as pool:
                probe_api = pool.submit(clients.probe, server.port, "", PROBE_DEADLINE_SECONDS)
                probe_health = pool.submit(
                    clients.probe, server.health_port, "", PROBE_DEADLINE_SECONDS
                )
                health = pool.submit(clients.health_calls, server.port, HEALTH_CALLS)
                seen = {
                    "probe on PORT": probe_api.result(),
                    "probe on HEALTH_PORT": probe_health.result(),
                    "PaymentService/Health": health.result(),
                }
            # SIGTERM while the watcher is still connected, never reading.
            exit_seconds = server.stop(timeout=grace + SHUTDOWN_SLACK_SECONDS)
    exit_code = server.process.returncode
    print(f"{seen}; exit {exit_code} {exit_seconds:.2f} s after SIGTERM")
    assert seen == {
        "probe on PORT": "SERVING",
        "probe on HEALTH_PORT": "SERVING",
        "PaymentService/Health": ["OK"] * HEALTH_CALLS,
    }
    assert exit_seconds <= grace + SHUTDOWN_SLACK_SECONDS, server.log[-2000:]
    assert exit_code == 0, server.log[-2000:]


def test_garbage_on_reflection_streams_left_open_blocks_no_shutdown() -> None:
    """Found while writing these tests, not in the issue's list: an undecodable message on
    reflection streams the client keeps open (no END_STREAM) is answered INTERNAL today,
    and then SIGTERM does not end the process (one such stream: now and then; ten: always).
    """
    grace = WATCH_GRACE_PERIOD_SECONDS
    environment = {"GRACE_PERIOD_SECONDS": str(grace)}
    with running_server(environment) as server, connected(server.port) as client:
        streams = [
            client.open_stream(REFLECTION_INFO.format("v1alpha")) for _ in range(REFLECTION_STREAMS)
        ]
        for stream in streams:
            client.send_message(stream, b"\xff\xff\xff", end_stream=False)
        answers = Counter(client.wait(stream, CALL_DEADLINE_SECONDS).code for stream in streams)
        exit_seconds = server.stop(timeout=grace + SHUTDOWN_SLACK_SECONDS)
    exit_code = server.process.returncode
    print(
        f"garbage on open reflection streams: {dict(answers)}; "
        f"exit {exit_code} {exit_seconds:.2f} s after SIGTERM"
    )
    assert exit_seconds <= grace + SHUTDOWN_SLACK_SECONDS, server.log[-2000:]
    assert exit_code == 0, server.log[-2000:]


def _replay_with_zero_window(server: ServerProcess) -> float:
    """ZERO_WINDOW_CALLS valid RequestPayment calls with one key from clients that advertise
    a zero window, ignoring MAX_CONCURRENT_STREAMS; a new connection whenever the server
    ends one. Returns the highest RSS seen meanwhile (MiB)."""
    request = valid_request("zero-window-replayed-key").SerializeToString()
    connections: list[Connection] = []
    peak, started = server.rss_mib(), time.monotonic()
    try:
        for number in range(ZERO_WINDOW_CALLS):
            if not connections or connections[-1].closed or connections[-1].goaway:
                connections.append(connect(server.port, initial_window=0))
            connection = connections[-1]
            with contextlib.suppress(OSError, TimeoutError):  # the server hung up: reconnect
                connection.wait_for_window(len(request) + 5)
                connection.write(connection.call_frames(REQUEST_PAYMENT, request)[1])
            connection.drain()
            pause = started + (number + 1) / ZERO_WINDOW_CALLS_PER_SECOND - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if number % 100 == 0:
                peak = max(peak, server.rss_mib())
        return max(peak, server.rss_mib())
    finally:
        for connection in connections:
            connection.close()


def test_a_zero_window_client_replaying_one_key_cannot_grow_memory() -> None:
    with running_server() as server:
        clients.payment_calls(server.port, 20)  # what every call needs is allocated now
        baseline = server.rss_mib()
        peak = _replay_with_zero_window(server)
        left_at = server.rss_mib()
        time.sleep(1.0)
        after = server.rss_mib()
        still = clients.payment_calls(server.port, 3)
    growth = {"peak": peak - baseline, "left": left_at - baseline, "1 s later": after - baseline}
    print("RSS growth (MiB): " + ", ".join(f"{k} {v:+.1f}" for k, v in growth.items()))
    assert growth["peak"] < RSS_GROWTH_LIMIT_MIB
    assert growth["1 s later"] < RSS_GROWTH_LIMIT_MIB
    assert after - left_at <= RSS_FLAT_SLACK_MIB
    assert still == ["OK"] * 3


def _rapid_reset(port: int, stop: threading.Event) -> Counter[str]:
    """HEADERS + DATA + RST_STREAM as fast as one thread can, reconnecting after a GOAWAY."""
    message = valid_request("rapid-reset-key-0001").SerializeToString()
    tally: Counter[str] = Counter()
    while not stop.is_set():
        with connected(port, decode=False) as connection:
            tally["connections"] += 1
            with contextlib.suppress(OSError, TimeoutError):  # the server hung up
                while not stop.is_set() and not connection.closed and not connection.goaway:
                    connection.wait_for_window(RAPID_RESET_BATCH * (len(message) + 5))
                    frames = []
                    for _ in range(RAPID_RESET_BATCH):
                        stream_id, call = connection.call_frames(
                            REQUEST_PAYMENT, message, end_stream=False, reset=True
                        )
                        del connection.streams[stream_id]  # nothing to remember of it
                        frames += call
                    connection.write(frames)
                    tally["streams"] += RAPID_RESET_BATCH
                    connection.drain()
            connection.listen(0.05)  # a GOAWAY may still be on its way
            tally["goaways"] += connection.goaway is not None
    return tally


def test_rapid_reset_leaves_normal_calls_and_probes_answered() -> None:
    calls: Counter[str] = Counter()
    probes: Counter[str] = Counter()
    stop = threading.Event()
    with running_server() as server, ThreadPoolExecutor(RAPID_RESET_CONNECTIONS + 2) as pool:

        def call() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                while not stop.is_set():
                    calls[clients.outcome_of_payment(channel, CALL_DEADLINE_SECONDS)] += 1

        def probe() -> None:
            while not stop.wait(PROBE_INTERVAL_SECONDS):
                probes[clients.probe(server.health_port, "", PROBE_DEADLINE_SECONDS)] += 1

        abusers = [
            pool.submit(_rapid_reset, server.port, stop) for _ in range(RAPID_RESET_CONNECTIONS)
        ]
        normal = [pool.submit(call), pool.submit(probe)]
        time.sleep(RAPID_RESET_SECONDS)
        stop.set()
        tallies = [abuser.result() for abuser in abusers]
        for client in normal:
            client.result()
    shares = {
        "calls": calls["OK"] / max(calls.total(), 1),
        "probes": probes["SERVING"] / max(probes.total(), 1),
    }
    every_abuser_sent_away = all(tally["goaways"] for tally in tallies)
    total = sum(tallies, Counter())
    print(
        f"rapid reset: {total['streams'] / RAPID_RESET_SECONDS:.0f} streams/s on "
        f"{total['connections']} connections, {total['goaways']} GOAWAYs; "
        f"calls {dict(calls)}, probes {dict(probes)}"
    )
    needed = SUCCESS_SHARE_WITH_GOAWAY if every_abuser_sent_away else SUCCESS_SHARE
    assert min(shares.values()) >= needed, shares


def _room_for(sockets: int) -> None:
    """Raise this process's soft fd limit (up to the hard one) to hold ``sockets`` more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sockets + 256
    if soft < wanted and (hard == resource.RLIM_INFINITY or hard >= wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    require(soft >= wanted, f"the test process may open {soft} files, {wanted} needed")


def test_idle_connections_to_metrics_cost_bounded_threads_and_memory() -> None:
    _room_for(METRICS_IDLE_CONNECTIONS)
    with running_server() as server:
        assert clients.get_metrics(server.metrics_port) == "OK"
        threads, rss = server.threads(), server.rss_mib()
        with idle_connections(
            server.metrics_port, METRICS_IDLE_CONNECTIONS, CONNECTIONS_PER_SECOND
        ):
            time.sleep(SETTLE_SECONDS)
            grown = {"threads": server.threads() - threads, "rss_mib": server.rss_mib() - rss}
            answer = clients.get_metrics(server.metrics_port, METRICS_ANSWER_SECONDS)
    print(f"{METRICS_IDLE_CONNECTIONS} idle connections to /metrics: {grown}, GET: {answer}")
    assert answer == "OK"
    assert grown["threads"] <= METRICS_THREAD_GROWTH_LIMIT
    assert grown["rss_mib"] <= METRICS_RSS_GROWTH_LIMIT_MIB


def test_a_connection_flood_under_the_fd_limit_spares_probes_metrics_and_the_api() -> None:
    """Probes and /metrics must answer throughout; the API may be out of reach a while
    (a server that drops never-speaking connections after a short handshake timeout and
    caps connections below its fd budget recovers), but not longer than the bound."""
    _room_for(PORT_IDLE_CONNECTIONS)
    with running_server(fd_limit=FD_LIMIT) as server:
        assert server.fd_limits() == (FD_LIMIT, FD_LIMIT)
        with idle_connections(server.port, PORT_IDLE_CONNECTIONS, 2 * CONNECTIONS_PER_SECOND):
            flooded_at = time.monotonic()
            with ThreadPoolExecutor(max_workers=3) as pool:
                api = pool.submit(clients.payment_after_wait, server.port, API_RECOVERY_SECONDS)
                probes = pool.submit(clients.probes, server.health_port, 2, PROBE_DEADLINE_SECONDS)
                metrics = pool.submit(
                    clients.get_metrics, server.metrics_port, METRICS_ANSWER_SECONDS
                )
                seen = {"probes": probes.result(), "metrics": metrics.result()}
                seen["API"], answered_at = api.result()
            seen["probes at the end"] = clients.probes(
                server.health_port, 2, PROBE_DEADLINE_SECONDS
            )
    ended = "answered" if seen["API"] == "OK" else "had not answered"
    print(
        f"{PORT_IDLE_CONNECTIONS} idle connections under {FD_LIMIT} fds: {seen}; "
        f"the API {ended} after {answered_at - flooded_at:.2f} s"
    )
    assert seen == {
        "probes": ["SERVING", "SERVING"],
        "metrics": "OK",
        "API": "OK",
        "probes at the end": ["SERVING", "SERVING"],
    }
