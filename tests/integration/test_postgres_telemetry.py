"""The PostgreSQL store's telemetry (query spans under the RPC span, pool gauges in /metrics)
and its group commit."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

import grpc
import psycopg
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from psycopg.conninfo import conninfo_to_dict

from payments_service import payments_pb2_grpc
from payments_service.domain.payment import Payment, PaymentRequest
from payments_service.storage.postgres import PostgresPaymentRepository
from tests.support.network import free_port
from tests.support.otlp_receiver import running_receiver
from tests.support.postgres import rows
from tests.support.processes import wait_until_ready
from tests.support.requests import valid_request
from tests.support.servers import make_settings, running_server

pytestmark = pytest.mark.postgres


def test_queries_are_client_spans_under_the_rpc_span(database_url: str) -> None:
    with running_receiver() as (receiver, receiver_port):
        settings = make_settings(
            storage_backend="postgres",
            database_url=database_url,
            otel_exporter_otlp_endpoint=f"http://127.0.0.1:{receiver_port}",
        )
        with running_server(settings) as app:  # stopping it flushes the spans
            wait_until_ready(app.port)
            with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                stub = payments_pb2_grpc.PaymentServiceStub(channel)
                stub.RequestPayment(
                    valid_request(f"span-{uuid.uuid4().hex}"),
                    timeout=10,
                )
        spans = receiver.spans()

    rpc = [s for s in spans if s.name == "payments.v1.PaymentService/RequestPayment"]
    inserts = [s for s in spans if s.name == "INSERT payments"]
    assert len(rpc) == 1, [s.name for s in spans]
    assert len(inserts) == 1, [s.name for s in spans]
    insert = inserts[0]
    assert insert.span.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert insert.trace_id == rpc[0].trace_id
    assert insert.parent_span_id == rpc[0].span_id  # the query span is the RPC's child
    attributes = insert.attributes
    assert attributes["db.system.name"] == "postgresql"
    assert attributes["db.operation.name"] == "INSERT"
    assert attributes["db.collection.name"] == "payments"
    assert attributes["db.namespace"] == conninfo_to_dict(database_url)["dbname"]
    assert attributes["db.query.text"].startswith("INSERT INTO payments")
    assert "%s" in attributes["db.query.text"]  # the text, never the values


def test_pool_gauges_are_in_metrics(database_url: str) -> None:
    metrics_port = free_port()
    settings = make_settings(
        storage_backend="postgres",
        database_url=database_url,
        database_pool_min_size=3,
        database_pool_max_size=7,
        metrics_port=metrics_port,
    )
    with running_server(settings) as app:
        wait_until_ready(app.port)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("payments_db_pool_")
    )
    assert float(samples["payments_db_pool_max_connections"]) == 7
    assert float(samples["payments_db_pool_min_connections"]) == 3
    assert float(samples["payments_db_pool_connections"]) >= 1
    assert float(samples["payments_db_pool_requests_total"]) >= 1  # the readiness ping
    assert "payments_db_pool_waiting_requests" in samples


async def test_group_commit_keeps_one_payment_per_key_in_mixed_batches(
    database_url: str,
) -> None:
    # 320 concurrent inserts over 20 keys: batches mix new keys, keys taken earlier and
    # several candidates of one key; each key must end with exactly one payment.
    keys = [f"batch-key-{i:03d}" for i in range(20)]
    candidates = [
        Payment.new(PaymentRequest(100 + i % 20, "USD", "order-b", keys[i % 20]))
        for i in range(320)
    ]
    repository = await PostgresPaymentRepository.open(database_url, min_size=1, max_size=8)
    try:
        stored = await asyncio.gather(*(repository.add_if_absent(c) for c in candidates))
    finally:
        await repository.close()
    winners: dict[str, set[str]] = {}
    for payment in stored:
        winners.setdefault(payment.idempotency_key, set()).add(payment.payment_id)
    assert all(len(ids) == 1 for ids in winners.values()), winners
    assert set(winners) == set(keys)
    in_database = dict(rows(database_url, "SELECT idempotency_key, payment_id::text FROM payments"))
    assert in_database == {key: ids.pop() for key, ids in winners.items()}


async def test_payments_stored_is_exact_when_small_and_postgres_estimate_when_large(
    database_url: str,
) -> None:
    """A scrape must not count a large table row by row: above the limit the gauge reads
    PostgreSQL's estimate, which ANALYZE (or autovacuum) refreshes."""
    store = await PostgresPaymentRepository.open(
        database_url, min_size=1, max_size=2, exact_count_limit=5
    )
    try:
        for i in range(10):
            await store.add_if_absent(Payment.new(PaymentRequest(100, "USD", "o", f"s-{i:04}")))
        assert await store.count() == 10  # never analysed yet: counted exactly
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ANALYZE payments")
        for i in range(10, 13):
            await store.add_if_absent(Payment.new(PaymentRequest(100, "USD", "o", f"s-{i:04}")))
        assert rows(database_url, "SELECT count(*) FROM payments") == [(13,)]
        assert await store.count() == 10  # 10 >= the limit: the estimate, not a count
    finally:
        await store.close()
