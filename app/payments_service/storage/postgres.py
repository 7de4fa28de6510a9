"""The durable store: PostgreSQL through psycopg 3's asyncio connection pool, shared by replicas.

Idempotency is one atomic statement, ``INSERT ... ON CONFLICT DO NOTHING RETURNING``:
the UNIQUE constraint on the idempotency key decides the single winner, even across
server processes. When the insert returns no row, another request owns the key and a
second statement reads its payment. There is never a check-then-insert window.
Inserts are group-committed (:mod:`payments_service.storage.group_commit`).

Every operation has one deadline, DATABASE_TIMEOUT_SECONDS after it starts, covering the
wait for a pooled connection, connecting and the query. A database that stops answering
(a hung server, a stuck pooler or sidecar, a network that swallows packets) gets no more:
at the deadline the connection's socket is shut down, the query fails at once and the
connection is discarded. statement_timeout and TCP keepalives are kept as a second line.
Every way the database can fail to answer becomes :class:`StoreUnavailableError`, which
callers see as UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from payments_service.domain.errors import StoreUnavailableError
from payments_service.domain.payment import Payment, PaymentStatus
from payments_service.storage.group_commit import GroupCommit

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]

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
SELECT payment_id, idempotency_key, amount_minor, currency, order_id, metadata, status, created_at
FROM payments WHERE idempotency_key = ANY(%s::text[])
"""
_SELECT_BY_ID = """
SELECT payment_id, idempotency_key, amount_minor, currency, order_id, metadata, status, created_at
FROM payments WHERE payment_id = %s
"""
# Exact below a limit; above it PostgreSQL's own estimate, as a full count would scan the
# table at every metrics scrape. reltuples is -1 until the table is first analysed.
_COUNT = """
SELECT CASE WHEN reltuples < %s THEN (SELECT count(*) FROM payments) ELSE reltuples::bigint END
FROM pg_class WHERE oid = 'payments'::regclass
"""
_PING = "SELECT 1"
#: A readiness ping gets at most this long (or DATABASE_TIMEOUT_SECONDS, when shorter): a
#: database that answers SELECT 1 slower than that cannot serve payments either.
PING_TIMEOUT_SECONDS = 1.0
#: At shutdown, connection attempts still under way get this long before they are dropped.
CLOSE_TIMEOUT_SECONDS = 1.0
#: Tries of one operation on a fresh connection after the one it had turned out dead.
_ATTEMPTS = 3


def connection_settings(url: str, timeout_seconds: float) -> str:
    """``url`` plus the limits every pooled connection carries.

    statement_timeout bounds each query on the server; connect_timeout bounds
    connecting; tcp_user_timeout and keepalives notice a peer that vanished without
    closing the connection (a cut network). Options already in the URL are kept.
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
    (payment_id, key, amount, currency, order_id, metadata, status, created) = row
    created_at: datetime = created
    return Payment(
        payment_id=str(payment_id),
        idempotency_key=key,
        amount_minor=amount,
        currency=currency,
        order_id=order_id,
        metadata=MappingProxyType(dict(metadata)),
        status=PaymentStatus(status),
        created_at=created_at,
    )


def _batch_json(payments: Sequence[Payment]) -> str:
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


class StatementRecord(Protocol):
    def batch(self, size: int) -> None:
        """The statement wrote a batch of ``size`` payments."""
        ...


class StatementObserver(Protocol):
    """Sees each statement the store runs, from start to end (telemetry makes them spans)."""

    def statement(self, operation: str, text: str) -> AbstractContextManager[StatementRecord]:
        """The context in which the ``operation`` ("INSERT", "SELECT") ``text`` runs."""
        ...


class _Unobserved:
    def batch(self, _size: int) -> None:
        return None

    @contextmanager
    def statement(self, _operation: str, _text: str) -> Iterator[StatementRecord]:
        yield self


@dataclass(frozen=True)
class DatabaseAddress:
    """Which database a URL names (what telemetry says of the store's statements)."""

    name: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> DatabaseAddress:
        details = conninfo_to_dict(url)
        return cls(
            str(details.get("dbname") or ""),
            str(details.get("host") or "localhost"),
            int(str(details.get("port") or 5432).split(",")[0]),
        )


def _sever(conn: Connection) -> None:
    """Shut the connection's socket down: a query waiting on it fails at once."""
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError:
        return  # already closed
    duplicate = socket.socket(fileno=os.dup(fd))
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected any more
    finally:
        duplicate.close()  # closes the duplicate only; psycopg still owns fd


class PostgresPaymentRepository:
    """A :class:`~payments_service.storage.repository.PaymentRepository` on PostgreSQL.

    Create it with :meth:`open` on the server's event loop. Every statement runs on a
    connection borrowed from the pool (autocommit, so each statement is its own
    transaction); ``add_if_absent`` goes through one group-commit writer.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        *,
        timeout_seconds: float,
        statements: StatementObserver,
        max_batch: int,
        exact_count_limit: int,
    ) -> None:
        self._pool = pool
        self._timeout = timeout_seconds
        self._exact_count_limit = exact_count_limit
        self._statements = statements
        self._inserts: GroupCommit[Payment, Payment] = GroupCommit(
            self._insert_batch, max_batch=max_batch, name=f"{pool.name}-writer"
        )
        self._last_success = 0.0  # time.monotonic() of the last operation that worked
        self._last_failure = 0.0
        self._hung = False  # a deadline passed since the last success (logged once)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout_seconds: float = 5.0,
        name: str = "payments",
        statements: StatementObserver | None = None,
        max_batch: int = 64,
        exact_count_limit: int = 100_000,
    ) -> PostgresPaymentRepository:
        """A store on ``url``. The pool connects in the background: the server starts
        even while the database is down, and reports NOT_SERVING until it is reachable."""
        conninfo = connection_settings(url, timeout_seconds)
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            conninfo,
            kwargs={"autocommit": True},
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_seconds,
            # Give up on a failing reconnection soon; the next request (or the readiness
            # ping) grows the pool again, so recovery never waits on a long backoff.
            reconnect_timeout=max(2.0, 2 * timeout_seconds),
            name=name,
            open=False,
        )
        await pool.open(wait=False)
        return cls(
            pool,
            timeout_seconds=timeout_seconds,
            statements=statements or _Unobserved(),
            max_batch=max_batch,
            exact_count_limit=exact_count_limit,
        )

    # -- the repository protocol ------------------------------------------------------

    async def add_if_absent(self, payment: Payment) -> Payment:
        # The span covers the wait in the queue and the batch's statement and commit.
        with self._statements.statement("INSERT", _INSERT_MANY) as record:
            stored, batch_size = await self._inserts.submit(payment, self._deadline())
            record.batch(batch_size)
        return stored

    async def get(self, payment_id: str) -> Payment | None:
        try:
            key = uuid.UUID(payment_id)
        except ValueError:
            return None  # not a UUID, so no payment can have it
        if str(key) != payment_id:
            return None  # ids are stored in canonical form, as the in-memory store keys them

        async def select(conn: Connection) -> Payment | None:
            row = await (await conn.execute(_SELECT_BY_ID, (key,))).fetchone()
            return None if row is None else _row_to_payment(row)

        with self._statements.statement("SELECT", _SELECT_BY_ID):
            return await self._shielded(select, self._deadline())

    async def count(self) -> int:
        """Exact up to ``exact_count_limit`` payments, then PostgreSQL's estimate."""

        async def count(conn: Connection) -> int:
            row = await (await conn.execute(_COUNT, (self._exact_count_limit,))).fetchone()
            return 0 if row is None else int(row[0])

        with self._statements.statement("SELECT", _COUNT):
            return await self._shielded(count, self._deadline())

    async def close(self) -> None:
        """Write the queued inserts, stop the writer, close every connection."""
        await self._inserts.close()
        await self._pool.close(timeout=min(self._timeout, CLOSE_TIMEOUT_SECONDS))

    # -- readiness and metrics --------------------------------------------------------

    async def ping(self) -> bool:
        """Whether the database answers through the pool right now.

        An operation that succeeded within the last second counts as an answer, so a busy
        server is not slowed down by pings, nor reported unready because every pooled
        connection is busy.
        """
        recent_success = self._last_success > self._last_failure
        if recent_success and time.monotonic() - self._last_success < 1.0:
            return True

        async def ping(conn: Connection) -> None:
            await conn.execute(_PING)

        deadline = asyncio.get_running_loop().time() + min(self._timeout, PING_TIMEOUT_SECONDS)
        try:
            await self._shielded(ping, deadline)
        except StoreUnavailableError:
            return False
        return True

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's gauges and counters (pool_size, pool_available, ...)."""
        return self._pool.get_stats()

    # -- internals --------------------------------------------------------------------

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._timeout

    async def _insert_batch(self, payments: Sequence[Payment], deadline: float) -> list[Payment]:
        """Insert the batch; returns the payment stored for each one's key, in order."""

        async def insert(conn: Connection) -> dict[str, Payment]:
            by_id = {payment.payment_id: payment for payment in payments}
            cursor = await conn.execute(_INSERT_MANY, (_batch_json(payments),))
            inserted = (by_id[payment_id] for (payment_id,) in await cursor.fetchall())
            stored = {payment.idempotency_key: payment for payment in inserted}
            taken = list({p.idempotency_key for p in payments if p.idempotency_key not in stored})
            if taken:  # these keys belong to earlier payments: read the winners
                cursor = await conn.execute(_SELECT_BY_KEYS, (taken,))
                for row in await cursor.fetchall():
                    winner = _row_to_payment(row)
                    stored[winner.idempotency_key] = winner
            return stored

        # Safe to retry: a retried insert finds the rows it wrote (same ids) or winners.
        stored = await self._run(insert, deadline)
        try:
            return [stored[payment.idempotency_key] for payment in payments]
        except KeyError:  # the winner cannot vanish: nothing ever deletes payments
            raise StoreUnavailableError("a payment for an idempotency key disappeared") from None

    async def _shielded(self, work: Callable[[Connection], Awaitable[T]], deadline: float) -> T:
        """:meth:`_run`, which a cancelled caller does not interrupt: an operation once
        started ends by its deadline, and psycopg never has to cancel a query midway."""
        return await asyncio.shield(self._run(work, deadline))

    async def _run(self, work: Callable[[Connection], Awaitable[T]], deadline: float) -> T:
        """Run ``work`` on a pooled connection by ``deadline``, translating database trouble.

        A connection that turns out dead (the server restarted, a network cut) is
        discarded and the work retried on another one while time remains, so a database
        that came back is used at once.
        """
        loop = asyncio.get_running_loop()
        for attempt in range(1, _ATTEMPTS + 1):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with self._connection(remaining, deadline) as conn:
                    result = await work(conn)
            except _ConnectionLost as lost:
                if attempt < _ATTEMPTS and not lost.past_deadline:
                    logger.info("Database connection lost (%s); retrying", lost.cause)
                    continue
                self._failed(lost.past_deadline)
                raise StoreUnavailableError() from lost.cause
            except psycopg.OperationalError as error:  # includes PoolTimeout, QueryCanceled
                self._failed(past_deadline=loop.time() >= deadline)
                # DEBUG: in an outage this happens on every call; the readiness monitor
                # and the pool log the outage itself at WARNING.
                logger.debug("Database unavailable: %s: %s", type(error).__name__, error)
                raise StoreUnavailableError() from error
            except psycopg.Error as error:
                self._failed(past_deadline=False)
                logger.error("Database error %s: %s", type(error).__name__, error)
                raise StoreUnavailableError() from error
            self._last_success = time.monotonic()
            self._hung = False
            return result
        self._failed(past_deadline=True)
        raise StoreUnavailableError()

    @asynccontextmanager
    async def _connection(self, timeout: float, deadline: float) -> AsyncIterator[Connection]:
        """A pooled connection that is severed if it is still in use at ``deadline``."""
        loop = asyncio.get_running_loop()
        async with self._pool.connection(timeout=timeout) as conn:
            severed = loop.call_at(deadline, _sever, conn)
            try:
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                # InterfaceError: "the connection is closed".
                if conn.broken or conn.closed or isinstance(error, psycopg.InterfaceError):
                    raise _ConnectionLost(error, past_deadline=loop.time() >= deadline) from error
                raise
            finally:
                severed.cancel()

    def _failed(self, past_deadline: bool) -> None:
        self._last_failure = time.monotonic()
        if past_deadline and not self._hung:
            self._hung = True
            logger.warning(
                "The database did not answer within %gs (DATABASE_TIMEOUT_SECONDS); "
                "calls get UNAVAILABLE until it does",
                self._timeout,
            )


class _ConnectionLost(Exception):
    """A pooled connection died under a query (internal to this module)."""

    def __init__(self, cause: psycopg.Error, *, past_deadline: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.past_deadline = past_deadline
