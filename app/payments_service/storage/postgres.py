"""The durable store: PostgreSQL through a psycopg 3 connection pool, shared by replicas.

Idempotency is one atomic statement, ``INSERT ... ON CONFLICT DO NOTHING RETURNING``:
the UNIQUE constraint on the idempotency key decides the single winner, even across
server processes. When the insert returns no row, another request owns the key and a
second statement reads its payment. There is never a check-then-insert window.

Every way the database can fail to answer (refused or dropped connection, no pooled
connection within the timeout, a query over the statement timeout, a server shutting
down) becomes :class:`StoreUnavailableError`, which callers see as UNAVAILABLE.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

import psycopg
from opentelemetry import trace
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from payments_service.domain.errors import StoreUnavailableError
from payments_service.domain.payment import Payment, PaymentStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]

# Column order of every row read: see _row_to_payment.
_INSERT = """
INSERT INTO payments (payment_id, idempotency_key, request_fingerprint, amount_minor,
                      currency, order_id, metadata, status, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING payment_id, idempotency_key, request_fingerprint, amount_minor,
          currency, order_id, metadata, status, created_at
"""
_SELECT_BY_KEY = """
SELECT payment_id, idempotency_key, request_fingerprint, amount_minor,
       currency, order_id, metadata, status, created_at
FROM payments WHERE idempotency_key = %s
"""
_SELECT_BY_ID = """
SELECT payment_id, idempotency_key, request_fingerprint, amount_minor,
       currency, order_id, metadata, status, created_at
FROM payments WHERE payment_id = %s
"""
_COUNT = "SELECT count(*) FROM payments"
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


def _payment_to_row(payment: Payment) -> tuple[Any, ...]:
    metadata: Mapping[str, str] = payment.metadata
    return (
        payment.payment_id,
        payment.idempotency_key,
        payment.request_fingerprint,
        payment.amount_minor,
        payment.currency,
        payment.order_id,
        Jsonb(dict(metadata)),
        payment.status.value,
        payment.created_at,
    )


class PostgresPaymentRepository:
    """A :class:`~payments_service.storage.repository.PaymentRepository` on PostgreSQL.

    Thread-safe: every call borrows a connection from the pool (autocommit, so each
    statement is its own transaction) for as long as the call runs.
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
    ) -> None:
        self._timeout = timeout_seconds
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

    # -- the repository protocol ------------------------------------------------------

    def add_if_absent(self, payment: Payment) -> Payment:
        def insert(conn: Connection) -> Payment:
            row = self._execute(conn, "INSERT", _INSERT, _payment_to_row(payment)).fetchone()
            if row is None:
                row = self._execute(
                    conn, "SELECT", _SELECT_BY_KEY, (payment.idempotency_key,)
                ).fetchone()
            if row is None:  # the winner cannot vanish: nothing ever deletes payments
                raise StoreUnavailableError("payment for the idempotency key disappeared")
            return _row_to_payment(row)

        # Safe to retry: a retried insert of the same candidate finds itself or the winner.
        return self._run(insert)

    def get(self, payment_id: str) -> Payment | None:
        try:
            key = uuid.UUID(payment_id)
        except ValueError:
            return None  # not a UUID, so no payment can have it

        def select(conn: Connection) -> Payment | None:
            row = self._execute(conn, "SELECT", _SELECT_BY_ID, (key,)).fetchone()
            return None if row is None else _row_to_payment(row)

        return self._run(select)

    def count(self) -> int:
        def count(conn: Connection) -> int:
            row = self._execute(conn, "SELECT", _COUNT, ()).fetchone()
            return 0 if row is None else int(row[0])

        return self._run(count)

    def close(self) -> None:
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

    @property
    def pool_max_size(self) -> int:
        return self._pool.max_size

    # -- internals --------------------------------------------------------------------

    def _execute(
        self, conn: Connection, operation: str, query: str, params: tuple[Any, ...]
    ) -> psycopg.Cursor[TupleRow]:
        with self._tracer.start_as_current_span(
            f"{operation} payments",
            kind=trace.SpanKind.CLIENT,
            attributes={
                **self._span_attributes,
                "db.operation.name": operation,
                "db.collection.name": "payments",
                "db.query.text": query.strip(),
            },
        ):
            return conn.execute(query, params)

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
                logger.warning("Database unavailable: %s", type(error).__name__)
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
