"""Two server processes on one PostgreSQL database, and a server killed with SIGKILL.

Idempotency must hold across replicas (the UNIQUE constraint decides, not process
memory), and every acknowledged payment must survive the process that acknowledged it.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from payments_service import payments_pb2, payments_pb2_grpc
from payments_service.transport.conversion import (
    CREATED_MESSAGE,
    REPLAYED_MESSAGE,
    payment_request_from_proto,
)
from tests.support.postgres import rows, start_replica
from tests.support.processes import stop_process
from tests.support.requests import valid_request

pytestmark = pytest.mark.postgres


@pytest.fixture
def replicas(database_url: str) -> Iterator[list[int]]:
    """Two server processes on the same database; yields their ports."""
    started = [start_replica(database_url), start_replica(database_url)]
    yield [port for _, port in started]
    for process, _ in started:
        stop_process(process)


def test_concurrent_identical_requests_on_two_replicas_create_one_payment(
    database_url: str, replicas: list[int]
) -> None:
    key = f"replica-race-{uuid.uuid4().hex[:8]}"
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in replicas]
    stubs = [payments_pb2_grpc.PaymentServiceStub(channel) for channel in channels]

    def call(i: int) -> payments_pb2.RequestPaymentResponse:
        response: payments_pb2.RequestPaymentResponse = stubs[i % 2].RequestPayment(
            valid_request(key), timeout=30
        )
        return response

    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            responses = list(pool.map(call, range(128)))
    finally:
        for channel in channels:
            channel.close()

    assert {r.payment_id for r in responses} == {responses[0].payment_id}
    messages = [r.message for r in responses]
    assert messages.count(CREATED_MESSAGE) == 1
    assert messages.count(REPLAYED_MESSAGE) == 127
    # The fingerprint column holds the request's fingerprint (replays compare recomputed ones).
    fingerprint = payment_request_from_proto(valid_request(key)).fingerprint()
    assert rows(database_url, "SELECT payment_id::text, request_fingerprint FROM payments") == [
        (responses[0].payment_id, fingerprint)
    ]


def test_reused_key_with_other_parameters_is_refused_by_either_replica(
    database_url: str, replicas: list[int]
) -> None:
    key = f"replica-reuse-{uuid.uuid4().hex[:8]}"
    first_port, second_port = replicas
    with grpc.insecure_channel(f"127.0.0.1:{first_port}") as channel:
        created = payments_pb2_grpc.PaymentServiceStub(channel).RequestPayment(
            valid_request(key), timeout=10
        )

    for port in (first_port, second_port):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = payments_pb2_grpc.PaymentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.RequestPayment(valid_request(key, amount_minor=999), timeout=10)
            assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            # ...and the other replica serves the payment the first one created.
            fetched = stub.GetPayment(
                payments_pb2.GetPaymentRequest(payment_id=created.payment_id), timeout=10
            )
            assert fetched.amount_minor == 1250
    assert rows(database_url, "SELECT count(*) FROM payments") == [(1,)]


def test_acknowledged_payments_survive_sigkill_and_retries_replay(database_url: str) -> None:
    process, port = start_replica(database_url)
    keys = [f"durable-{i:03d}-{uuid.uuid4().hex[:8]}" for i in range(60)]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = payments_pb2_grpc.PaymentServiceStub(channel)
            acknowledged = {
                key: stub.RequestPayment(
                    valid_request(key, amount_minor=100 + i), timeout=10
                ).payment_id
                for i, key in enumerate(keys)
            }
    finally:
        stop_process(process, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL

    process, port = start_replica(database_url)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = payments_pb2_grpc.PaymentServiceStub(channel)
            for i, key in enumerate(keys):
                payment_id = acknowledged[key]
                fetched = stub.GetPayment(
                    payments_pb2.GetPaymentRequest(payment_id=payment_id), timeout=10
                )
                assert (fetched.payment_id, fetched.amount_minor) == (payment_id, 100 + i)
                replay = stub.RequestPayment(valid_request(key, amount_minor=100 + i), timeout=10)
                assert (replay.payment_id, replay.message) == (payment_id, REPLAYED_MESSAGE)
    finally:
        stop_process(process)
    assert rows(database_url, "SELECT count(*) FROM payments") == [(len(keys),)]
