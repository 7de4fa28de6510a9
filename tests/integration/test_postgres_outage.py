"""The database goes away and comes back: UNAVAILABLE, readiness, recovery, nothing lost.

The server reaches PostgreSQL through a TCP proxy in the test; cutting the proxy drops
every connection and refuses new ones, like a network partition or a database restart.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from payments_service import payments_pb2_grpc
from tests.support.postgres import port_of, rows
from tests.support.processes import NOT_SERVING, SERVING, wait_for_health, wait_until_ready
from tests.support.proxy import TcpProxy
from tests.support.requests import valid_request
from tests.support.servers import RunningServer, ServerFactory, make_settings

pytestmark = pytest.mark.postgres


@dataclass
class Outcome:
    key: str
    code: grpc.StatusCode
    payment_id: str = ""


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(port_of(database_url))
    proxy.start()
    yield proxy
    proxy.cut()


def _server(server_factory: ServerFactory, database_url: str, proxy: TcpProxy) -> RunningServer:
    settings = make_settings(
        storage_backend="postgres",
        database_url=make_conninfo(database_url, host="127.0.0.1", port=proxy.port),
        database_timeout_seconds=1,
        database_pool_min_size=2,
        database_pool_max_size=16,
    )
    app = server_factory(settings)
    wait_until_ready(app.port)
    return app


def _call(stub: payments_pb2_grpc.PaymentServiceStub, key: str) -> Outcome:
    try:
        response = stub.RequestPayment(valid_request(key), timeout=10)
    except grpc.RpcError as error:
        return Outcome(key, error.code())
    return Outcome(key, grpc.StatusCode.OK, response.payment_id)


def test_outage_gives_unavailable_flips_readiness_and_recovers_without_loss(
    server_factory: ServerFactory, database_url: str, proxy: TcpProxy
) -> None:
    app = _server(server_factory, database_url, proxy)
    outcomes: list[Outcome] = []
    stop = threading.Event()
    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
    stub = payments_pb2_grpc.PaymentServiceStub(channel)

    def traffic() -> None:
        while not stop.is_set():
            outcomes.append(_call(stub, f"outage-{uuid.uuid4().hex}"))
            time.sleep(0.005)

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 10
        while sum(o.code is grpc.StatusCode.OK for o in outcomes) < 20:
            assert time.monotonic() < deadline, "no traffic got through before the outage"
            time.sleep(0.05)

        proxy.cut()
        wait_for_health(app.port, NOT_SERVING, timeout=15)
        wait_for_health(app.port, SERVING, timeout=1, service="")  # liveness is unaffected
        during = _call(stub, f"outage-during-{uuid.uuid4().hex}")
        assert during.code is grpc.StatusCode.UNAVAILABLE
        outcomes.append(during)

        proxy.restore()
        wait_for_health(app.port, SERVING, timeout=20)
        ok_before = sum(o.code is grpc.StatusCode.OK for o in outcomes)
        deadline = time.monotonic() + 10
        while sum(o.code is grpc.StatusCode.OK for o in outcomes) < ok_before + 20:
            assert time.monotonic() < deadline, "traffic did not recover after the outage"
            time.sleep(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join()

    codes = {o.code for o in outcomes}
    assert codes == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes

    stored = dict(rows(database_url, "SELECT idempotency_key, payment_id::text FROM payments"))
    acknowledged = {o.key: o.payment_id for o in outcomes if o.code is grpc.StatusCode.OK}
    # Every acknowledged payment is stored, under the id the caller was given...
    assert {key: stored.get(key) for key in acknowledged} == acknowledged
    # ...and nothing was stored that nobody asked for.
    assert set(stored) <= {o.key for o in outcomes}

    # A client retrying its failed calls ends with exactly one payment per key.
    failed = [o.key for o in outcomes if o.code is not grpc.StatusCode.OK]
    retried = [_call(stub, key) for key in failed]
    channel.close()
    assert {o.code for o in retried} == {grpc.StatusCode.OK}
    assert rows(database_url, "SELECT count(*), count(DISTINCT idempotency_key) FROM payments") == [
        (len(outcomes), len(outcomes))
    ]


def test_a_query_stuck_behind_a_lock_times_out_as_unavailable(
    server_factory: ServerFactory, database_url: str, proxy: TcpProxy
) -> None:
    app = _server(server_factory, database_url, proxy)
    with (
        psycopg.connect(database_url) as locker,
        grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        locker.execute("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        outcome = _call(stub, f"locked-{uuid.uuid4().hex}")
        locker.rollback()
    # statement_timeout (DATABASE_TIMEOUT_SECONDS=1) ended the wait, well before the
    # client's 10 s deadline: a clean UNAVAILABLE, not DEADLINE_EXCEEDED or INTERNAL.
    assert outcome.code is grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        after = _call(payments_pb2_grpc.PaymentServiceStub(channel), outcome.key)
    assert after.code is grpc.StatusCode.OK
