"""1 ms deadlines, then retries with the same key: exactly one payment per key (a regression
test, in memory and on PostgreSQL, against the real server process).

A call whose deadline passes may still be carried out by the server: the client gets
DEADLINE_EXCEEDED, the payment may exist. A client that retries with the same key must then
get that payment back, never a second one.
"""

from __future__ import annotations

import threading
import urllib.request
import uuid
from collections import Counter

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from payments_service import payments_pb2, payments_pb2_grpc
from payments_service.transport.conversion import REPLAYED_MESSAGE
from tests.support.network import free_port
from tests.support.postgres import rows
from tests.support.processes import CapturedServer, wait_until_ready
from tests.support.requests import valid_request

KEYS = 60
TIGHT_ATTEMPTS = 3  # per key, each with a 1 ms deadline, before the retries
TIGHT_DEADLINE_SECONDS = 0.001
RETRY_DEADLINE_SECONDS = 10.0
THREADS = 4


def _payments_stored(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return families["payments_stored"].samples[0].value


@pytest.mark.parametrize(
    "backend", ["memory", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_one_ms_deadlines_then_retries_leave_exactly_one_payment_per_key(
    backend: str, request: pytest.FixtureRequest
) -> None:
    port, metrics_port = free_port(), free_port()
    env = {"PORT": str(port), "HOST": "127.0.0.1", "METRICS_PORT": str(metrics_port)}
    url = ""
    if backend == "postgres":
        url = request.getfixturevalue("database_url")
        env.update(STORAGE_BACKEND="postgres", DATABASE_URL=url)
    keys = [f"tight-{i:03d}-{uuid.uuid4().hex[:12]}" for i in range(KEYS)]
    tight: dict[str, list[str]] = {}
    retried: dict[str, list[payments_pb2.RequestPaymentResponse]] = {}
    lock = threading.Lock()

    with CapturedServer(env):
        wait_until_ready(port)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = payments_pb2_grpc.PaymentServiceStub(channel)

        def client(mine: list[str]) -> None:
            for key in mine:
                codes = []
                for _ in range(TIGHT_ATTEMPTS):
                    try:
                        stub.RequestPayment(valid_request(key), timeout=TIGHT_DEADLINE_SECONDS)
                        codes.append("OK")
                    except grpc.RpcError as error:
                        codes.append(error.code().name)
                answers = [
                    stub.RequestPayment(valid_request(key), timeout=RETRY_DEADLINE_SECONDS)
                    for _ in range(2)
                ]
                with lock:
                    tight[key], retried[key] = codes, answers

        threads = [
            threading.Thread(target=client, args=(keys[n::THREADS],)) for n in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        stored = _payments_stored(metrics_port)
        channel.close()

    ended = Counter(code for codes in tight.values() for code in codes)
    # Keys whose every 1 ms call ended DEADLINE_EXCEEDED, yet the server had stored them.
    given_up_but_stored = sum(
        set(tight[key]) == {"DEADLINE_EXCEEDED"} and answers[0].message == REPLAYED_MESSAGE
        for key, answers in retried.items()
    )
    print(
        f"\n{backend}: 1 ms calls ended {dict(ended)}; keys stored by a call its client had "
        f"given up on: {given_up_but_stored}; payments stored {stored:.0f}"
    )
    assert set(ended) <= {"OK", "DEADLINE_EXCEEDED"}, ended
    assert sorted(retried) == sorted(keys)
    for answers in retried.values():
        assert answers[0].payment_id == answers[1].payment_id
        assert answers[1].message == REPLAYED_MESSAGE
    assert stored == KEYS
    if backend == "postgres":
        assert rows(url, "SELECT count(*), count(DISTINCT idempotency_key) FROM payments") == [
            (KEYS, KEYS)
        ]
        ids = dict(rows(url, "SELECT idempotency_key, payment_id::text FROM payments"))
        assert ids == {key: answers[0].payment_id for key, answers in retried.items()}
