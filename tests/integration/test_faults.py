"""Faults under load: a rolling restart of two replicas, and kill -9 of a replica.

Both run real server processes on one PostgreSQL database, with clients calling all the
time. Promises: a client that retries UNAVAILABLE sees no failed call during a rolling
restart; no acknowledged payment is lost to SIGKILL; no key ever has two payments.

A call that reaches a replica in the instant it stops listening, before the server has
taken it up, is cancelled by gRPC core (CANCELLED, not UNAVAILABLE). In Kubernetes the
preStop pause keeps that instant free of new calls; here the client sends all the time,
so it also retries CANCELLED (safe: RequestPayment is idempotent) and the test bounds how
often that happens: at most once per client thread.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments_service import payments_pb2_grpc
from tests.support.postgres import rows, start_replica
from tests.support.processes import stop_process
from tests.support.requests import valid_request

pytestmark = pytest.mark.postgres

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Ledger:
    """What the clients saw: acknowledged payments, failures, keys sent, retries made."""

    acknowledged: dict[str, str] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    sent: set[str] = field(default_factory=set)
    retries: int = 0
    cancelled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class RetryingClient:
    """Round-robins over replicas; retries UNAVAILABLE (and CANCELLED) on the next replica."""

    def __init__(self, ports: list[int], ledger: Ledger, attempts: int = 20) -> None:
        self._channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in ports]
        self._stubs = [payments_pb2_grpc.PaymentServiceStub(c) for c in self._channels]
        self._next = itertools.count()
        self._ledger = ledger
        self._attempts = attempts

    def request_payment(self, key: str) -> None:
        with self._ledger.lock:
            self._ledger.sent.add(key)
        first = next(self._next)
        for attempt in range(self._attempts):
            stub = self._stubs[(first + attempt) % len(self._stubs)]
            try:
                response = stub.RequestPayment(valid_request(key), timeout=10)
            except grpc.RpcError as error:
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    with self._ledger.lock:
                        self._ledger.retries += 1
                        self._ledger.cancelled += error.code() is grpc.StatusCode.CANCELLED
                    time.sleep(0.02 * attempt)
                    continue
                with self._ledger.lock:
                    self._ledger.failed.append((key, error.code().name))
                return
            with self._ledger.lock:
                self._ledger.acknowledged[key] = response.payment_id
            return
        with self._ledger.lock:
            self._ledger.failed.append((key, "UNAVAILABLE after every attempt"))

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


@contextlib.contextmanager
def running_load(client: RetryingClient, threads: int, prefix: str) -> Iterator[None]:
    """Client threads sending new keys back to back until the block ends."""
    stop = threading.Event()

    def run(n: int) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            client.request_payment(f"{prefix}-{n}-{i}")

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)


def _wait_for_acknowledged(ledger: Ledger, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(ledger.acknowledged) < count:
        assert time.monotonic() < deadline, f"only {len(ledger.acknowledged)} calls succeeded"
        time.sleep(0.05)


def _watch_health(port: int, seen: list[int]) -> threading.Thread:
    """Record every status the replica's health Watch stream sends until it ends."""

    def watch() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=60
            )
            try:
                for answer in stream:
                    seen.append(answer.status)
            except grpc.RpcError:
                return  # the server went away: the stream ends

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def _assert_one_payment_per_key(url: str, ledger: Ledger) -> None:
    stored = {
        str(key): str(payment_id)
        for key, payment_id in rows(url, "SELECT idempotency_key, payment_id::text FROM payments")
    }
    # Every acknowledged payment is stored under the id its client was given...
    assert {key: stored.get(key) for key in ledger.acknowledged} == ledger.acknowledged
    # ...nothing nobody asked for is stored, and no key has two payments.
    assert set(stored) <= ledger.sent
    assert rows(url, "SELECT count(*) - count(DISTINCT idempotency_key) FROM payments") == [(0,)]


def test_rolling_restart_loses_no_call_of_a_client_that_retries_unavailable(
    database_url: str,
) -> None:
    first, first_port = start_replica(database_url, GRACE_PERIOD_SECONDS="10")
    second, second_port = start_replica(database_url)
    ledger = Ledger()
    client = RetryingClient([first_port, second_port], ledger)
    health_seen: list[int] = []
    try:
        with running_load(client, threads=6, prefix=f"roll-{uuid.uuid4().hex[:6]}"):
            _wait_for_acknowledged(ledger, 100)
            watcher = _watch_health(first_port, health_seen)
            time.sleep(0.2)  # the Watch stream has delivered SERVING
            before = len(ledger.acknowledged)
            output = stop_process(first)  # SIGTERM, as Kubernetes does in a rollout
            watcher.join(timeout=30)
            # The survivor carries on alone, then a new replica takes the old one's place.
            _wait_for_acknowledged(ledger, before + 100)
            third, _ = start_replica(database_url)
            _wait_for_acknowledged(ledger, len(ledger.acknowledged) + 50)
        stop_process(third)
    finally:
        client.close()
        stop_process(second)

    print(
        f"\nrolling restart: {len(ledger.acknowledged)} payments acknowledged, "
        f"{len(ledger.failed)} failed, {ledger.retries} answers retried "
        f"({ledger.cancelled} of them CANCELLED)"
    )
    assert first.returncode == 0, output
    assert ledger.failed == []
    assert ledger.cancelled <= 6, "more than one call per client thread raced the stop"
    assert health_seen[:1] == [SERVING]
    assert NOT_SERVING in health_seen, f"the replica never said NOT_SERVING: {health_seen}"
    _assert_one_payment_per_key(database_url, ledger)


def test_kill_9_under_load_loses_no_acknowledged_payment(database_url: str) -> None:
    victim, victim_port = start_replica(database_url)
    ledger = Ledger()
    # No retries: the calls in flight when the process dies fail, which is the point.
    client = RetryingClient([victim_port], ledger, attempts=1)
    try:
        with running_load(client, threads=8, prefix=f"kill-{uuid.uuid4().hex[:6]}"):
            _wait_for_acknowledged(ledger, 200)
            stop_process(victim, signal.SIGKILL)
    finally:
        client.close()
    assert victim.returncode == -signal.SIGKILL
    in_flight = ledger.sent - set(ledger.acknowledged)
    print(
        f"\nkill -9: {len(ledger.acknowledged)} payments acknowledged before the kill, "
        f"{len(in_flight)} calls cut off"
    )
    _assert_one_payment_per_key(database_url, ledger)

    # A restarted replica: each client retries what it sent; exactly one payment per key.
    survivor, survivor_port = start_replica(database_url)
    retried = Ledger()
    retrying = RetryingClient([survivor_port], retried)
    try:
        for key in sorted(ledger.sent):
            retrying.request_payment(key)
    finally:
        retrying.close()
        stop_process(survivor)
    assert retried.failed == []
    assert {key: retried.acknowledged[key] for key in ledger.acknowledged} == ledger.acknowledged
    assert rows(database_url, "SELECT count(*), count(DISTINCT idempotency_key) FROM payments") == [
        (len(ledger.sent), len(ledger.sent))
    ]
