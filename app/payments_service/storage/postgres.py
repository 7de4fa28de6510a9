"""The durable store: PostgreSQL through a psycopg 3 connection pool, shared by replicas.

Idempotency is one atomic statement, ``INSERT ... ON CONFLICT DO NOTHING RETURNING``:
the UNIQUE constraint on the idempotency key decides the single winner, even across
server processes. When the insert returns no row, another request owns the key and a
second statement reads its payment. There is never a check-then-insert window.

Inserts are group-committed: a durable commit waits for the WAL to reach the disk
(milliseconds), so concurrent RequestPayment calls hand their payment to a writer
thread, which inserts whatever has queued up meanwhile as one multi-row statement and
one commit. A lone call is written at once; under load one disk flush serves many.
One writer, not several: the fixed cost of a statement (0.25 to 0.3 ms of CPU in psycopg
and the pool) is what limits a CPU-bound server, and one writer makes the batches
largest; while it commits, the next batch gathers.

Every way the database can fail to answer (refused or dropped connection, no pooled
connection within the timeout, a query over the statement timeout, a server shutting
down) becomes :class:`StoreUnavailableError`, which callers see as UNAVAILABLE.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

import psycopg
from opentelemetry import trace
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from payments_service.domain.errors import StoreUnavailableError
from payments_service.domain.payment import Payment, PaymentStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]

# The batch is one JSON array parameter (one object per payment; see _batch_json): one
# C-speed json.dumps per batch instead of nine array parameters, each dumped element by
# element in Python. Of several rows with one key in a batch, the first is inserted, the
# others conflict. Only the ids of the inserted rows come back (as text, the form the
# payments carry): those rows are the candidates themselves, so nothing else is decoded.
_INSERT_MANY = """
INSERT INTO payments (payment_id, idempotency_key, request_fingerprint, amount_minor,
                      currency, order_id, metadata, status, created_at)
SELECT * FROM json_to_recordset(%s::json) AS batch(
    payment_id uuid, idempotency_key text, request_fingerprint text, amount_minor bigint,
    currency text, order_id text, metadata jsonb, status text, created_at timestamptz)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING payment_id::text
"""
# Column order of every row read: see _row_to_payment.
_SELECT_BY_KEYS = """
SELECT payment_id, idempotency_key, request_fingerprint, amount_minor,
       currency, order_id, metadata, status, created_at
FROM payments WHERE idempotency_key = ANY(%s::text[])
"""
_SELECT_BY_ID = """
SELECT payment_id, idempotency_key, request_fingerprint, amount_minor,
       currency, order_id, metadata, status, created_at
FROM payments WHERE payment_id = %s
"""
# Exact below a limit; above it PostgreSQL's own estimate, as a full count would scan the
# table at every metrics scrape. reltuples is -1 until the table is first analysed.
_COUNT = """
SELECT CASE WHEN reltuples < %s THEN (SELECT count(*) FROM payments) ELSE reltuples::bigint END
FROM pg_class WHERE oid = 'payments'::regclass
"""
_PING = "SELECT 1"


def connection_settings(url: str, timeout_seconds: float) -> str:
    """``url`` plus the limits every pooled connection carries.

    statement_timeout bounds each query on the server; connect_timeout bounds
    connecting; tcp_user_timeout and keepalives notice a peer that vanished without
    closing the connection (a cut network), which no server-side limit can.
    Options already in the URL (e.g. a search_path) are kept.
    """
    millis = max(1, round(timeout_seconds * 1000))
    given = conninfo_to_dict(url)
    options = " ".join(
        part
        for part in (
            str(given.get("options") or ""),
            f"-c statement_timeout={millis}",
            "-c idle_in_transaction_session_timeout=60000",
            "-c TimeZone=UTC",
        )
        if part
    )
    return make_conninfo(
        url,
        options=options,
        connect_timeout=max(2, round(timeout_seconds)),
        tcp_user_timeout=millis,
        keepalives=1,
        keepalives_idle=max(1, round(timeout_seconds)),
        keepalives_interval=1,
        keepalives_count=3,
        application_name=given.get("application_name") or "payments-service",
    )


def _row_to_payment(row: tuple[Any, ...]) -> Payment:
    (payment_id, key, fingerprint, amount, currency, order_id, metadata, status, created) = row
    created_at: datetime = created
    return Payment(
        payment_id=str(payment_id),
        idempotency_key=key,
        request_fingerprint=fingerprint,
        amount_minor=amount,
        currency=currency,
        order_id=order_id,
        metadata=MappingProxyType(dict(metadata)),
        status=PaymentStatus(status),
        created_at=created_at,
    )


def _batch_json(payments: list[Payment]) -> str:
    """The batch as the JSON parameter of _INSERT_MANY (keys are the column names)."""
    return json.dumps(
        [
            {
                "payment_id": p.payment_id,
                "idempotency_key": p.idempotency_key,
                "request_fingerprint": p.request_fingerprint,
                "amount_minor": p.amount_minor,
                "currency": p.currency,
                "order_id": p.order_id,
                "metadata": dict(p.metadata),
                "status": p.status.value,
                "created_at": p.created_at.isoformat(),
            }
            for p in payments
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


@dataclass
class _PendingInsert:
    """A payment waiting in the insert queue, and where its outcome goes."""

    payment: Payment
    outcome: Future[Payment] = field(default_factory=Future)
    batch_size: int = 0


class PostgresPaymentRepository:
    """A :class:`~payments_service.storage.repository.PaymentRepository` on PostgreSQL.

    Thread-safe: every statement runs on a connection borrowed from the pool
    (autocommit, so each statement is its own transaction). ``add_if_absent`` queues the
    payment for one of ``writers`` threads (one by default), which insert up to
    ``max_batch`` queued payments with one statement; the other calls run on the
    caller's thread.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout_seconds: float = 5.0,
        name: str = "payments",
        tracer_provider: trace.TracerProvider | None = None,
        writers: int = 1,
        max_batch: int = 64,
        exact_count_limit: int = 100_000,
    ) -> None:
        self._max_batch = max_batch
        self._exact_count_limit = exact_count_limit
        conninfo = connection_settings(url, timeout_seconds)
        details = conninfo_to_dict(conninfo)
        self._span_attributes: dict[str, str | int] = {
            "db.system": "postgresql",
            "db.system.name": "postgresql",
            "db.namespace": str(details.get("dbname") or ""),
            "server.address": str(details.get("host") or "localhost"),
            "server.port": int(details.get("port") or 5432),
        }
        # Spans nest under the RPC's server span (the current span of the calling thread).
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._outcome_lock = threading.Lock()
        self._last_success = 0.0  # time.monotonic() of the last query that worked
        self._last_failure = 0.0
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            conninfo,
            kwargs={"autocommit": True},
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_seconds,
            # Give up on a failing reconnection soon; the next request (or the readiness
            # monitor's ping) grows the pool again, so recovery never waits on a long backoff.
            reconnect_timeout=max(2.0, 2 * timeout_seconds),
            name=name,
            open=False,
        )
        # Start connecting in the background: the server starts even while the
        # database is down, and reports NOT_SERVING until it is reachable.
        self._pool.open(wait=False)
        self._inserts: queue.SimpleQueue[_PendingInsert | None] = queue.SimpleQueue()
        self._writers = [
            threading.Thread(target=self._write_loop, name=f"{name}-writer-{i}", daemon=True)
            for i in range(writers)
        ]
        for writer in self._writers:
            writer.start()

    # -- the repository protocol ------------------------------------------------------

    def add_if_absent(self, payment: Payment) -> Payment:
        pending = _PendingInsert(payment)
        # The span covers the wait in the queue and the batch's statement and commit.
        with self._span("INSERT", _INSERT_MANY) as span:
            self._inserts.put(pending)
            stored = pending.outcome.result()
            span.set_attribute("db.operation.batch.size", pending.batch_size)
        return stored

    def get(self, payment_id: str) -> Payment | None:
        try:
            key = uuid.UUID(payment_id)
        except ValueError:
            return None  # not a UUID, so no payment can have it
        if str(key) != payment_id:
            return None  # ids are stored in canonical form, as the in-memory store keys them

        def select(conn: Connection) -> Payment | None:
            row = conn.execute(_SELECT_BY_ID, (key,)).fetchone()
            return None if row is None else _row_to_payment(row)

        with self._span("SELECT", _SELECT_BY_ID):
            return self._run(select)

    def count(self) -> int:
        """Exact up to ``exact_count_limit`` payments, then PostgreSQL's estimate."""

        def count(conn: Connection) -> int:
            row = conn.execute(_COUNT, (self._exact_count_limit,)).fetchone()
            return 0 if row is None else int(row[0])

        with self._span("SELECT", _COUNT):
            return self._run(count)

    def close(self) -> None:
        """Finish the queued inserts, stop the writers, close every connection."""
        for _ in self._writers:
            self._inserts.put(None)
        for writer in self._writers:
            writer.join()
        self._pool.close()

    # -- readiness and metrics --------------------------------------------------------

    def ping(self) -> bool:
        """Whether the database answers through the pool right now.

        A query that succeeded within the last second counts as an answer, so a busy
        server is not slowed down by pings, nor reported unready because every pooled
        connection is busy.
        """
        with self._outcome_lock:
            recent_success = self._last_success > self._last_failure
            if recent_success and time.monotonic() - self._last_success < 1.0:
                return True
        try:
            self._run(lambda conn: conn.execute(_PING).fetchone(), retry=False)
        except StoreUnavailableError:
            return False
        return True

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's gauges and counters (pool_size, pool_available, ...)."""
        return self._pool.get_stats()

    # -- internals --------------------------------------------------------------------

    @contextmanager
    def _span(self, operation: str, query: str) -> Iterator[trace.Span]:
        """A CLIENT span with the db.* attributes, under the caller's current span."""
        with self._tracer.start_as_current_span(
            f"{operation} payments",
            kind=trace.SpanKind.CLIENT,
            attributes={
                **self._span_attributes,
                "db.operation.name": operation,
                "db.collection.name": "payments",
                "db.query.text": query.strip(),
            },
        ) as span:
            yield span

    def _write_loop(self) -> None:
        """A writer thread: take what is queued (up to max_batch), insert it, repeat."""
        while True:
            first = self._inserts.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._inserts.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # close(): finish this batch, then stop
                    self._inserts.put(None)
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_PendingInsert]) -> None:
        try:
            # Safe to retry: a retried insert finds the rows it wrote (same ids) or winners.
            stored = self._run(lambda conn: self._insert_batch(conn, batch))
        except Exception as error:  # every waiter gets its own exception object
            if not isinstance(error, StoreUnavailableError):
                logger.exception("Unexpected error writing a batch of %d payments", len(batch))
            for pending in batch:
                failure = StoreUnavailableError()
                failure.__cause__ = error
                pending.outcome.set_exception(failure)
            return
        for pending in batch:
            pending.batch_size = len(batch)
            pending.outcome.set_result(stored[pending.payment.idempotency_key])

    @staticmethod
    def _insert_batch(conn: Connection, batch: list[_PendingInsert]) -> dict[str, Payment]:
        """Insert the batch; returns idempotency key -> the payment stored for it."""
        payments = [pending.payment for pending in batch]
        by_id = {payment.payment_id: payment for payment in payments}
        rows = conn.execute(_INSERT_MANY, (_batch_json(payments),)).fetchall()
        inserted = (by_id[payment_id] for (payment_id,) in rows)
        stored = {payment.idempotency_key: payment for payment in inserted}
        taken = list({p.idempotency_key for p in payments if p.idempotency_key not in stored})
        if taken:  # these keys belong to earlier payments: read the winners
            for row in conn.execute(_SELECT_BY_KEYS, (taken,)).fetchall():
                winner = _row_to_payment(row)
                stored[winner.idempotency_key] = winner
        if len(stored) < len({p.idempotency_key for p in payments}):
            # The winner cannot vanish: nothing ever deletes payments.
            raise StoreUnavailableError("a payment for an idempotency key disappeared")
        return stored

    def _run(self, work: Callable[[Connection], T], *, retry: bool = True) -> T:
        """Run ``work`` on a pooled connection, translating database trouble.

        A connection that turns out dead (the server restarted, a network cut) is
        discarded with every other dead idle one and the work retried once on a fresh
        connection, so a database that came back is used at once.
        """
        attempts = 2 if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                with self._connection() as conn:
                    result = work(conn)
            except _ConnectionLost as lost:
                if attempt < attempts:
                    logger.info("Database connection lost (%s); retrying once", lost.cause)
                    self._discard_dead_connections()
                    continue
                self._failed()
                raise StoreUnavailableError() from lost.cause
            except psycopg.OperationalError as error:  # includes PoolTimeout, QueryCanceled
                self._failed()
                # DEBUG: in an outage this happens on every call; the readiness monitor
                # and the pool log the outage itself at WARNING.
                logger.debug("Database unavailable: %s: %s", type(error).__name__, error)
                raise StoreUnavailableError() from error
            except psycopg.Error as error:
                self._failed()
                logger.error("Database error %s: %s", type(error).__name__, error)
                raise StoreUnavailableError() from error
            with self._outcome_lock:
                self._last_success = time.monotonic()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        with self._pool.connection() as conn:
            try:
                yield conn
            except psycopg.OperationalError as error:
                if conn.broken or conn.closed:
                    raise _ConnectionLost(error) from error
                raise
            except psycopg.InterfaceError as error:  # "the connection is closed"
                raise _ConnectionLost(error) from error

    def _discard_dead_connections(self) -> None:
        try:
            self._pool.check()
        except psycopg.Error:  # pragma: no cover - check() handles connection errors itself
            logger.debug("Pool check failed", exc_info=True)

    def _failed(self) -> None:
        with self._outcome_lock:
            self._last_failure = time.monotonic()


class _ConnectionLost(Exception):
    """A pooled connection died under a query (internal to this module)."""

    def __init__(self, cause: psycopg.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause
