"""Versioned schema migrations: plain SQL files applied in order, once, under a lock.

Each file in ``storage/migrations`` is named ``NNNN_description.sql``. The runner takes a
PostgreSQL session advisory lock, so replicas that start together (or a migration job
running beside them) apply every file exactly once; the others wait, then find nothing
left to do. Each file runs in its own transaction together with its row in
``schema_migrations``, so a failed file leaves no trace and can be fixed and re-run.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from importlib import resources

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

#: pg_advisory_lock key of the migration runner (any fixed 64-bit number works).
ADVISORY_LOCK_KEY = 0x7061796D656E7473  # "payments"
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations on disk and those recorded in the database disagree."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file of the schema's history."""

    version: int
    name: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    folder = resources.files("payments_service.storage").joinpath("migrations")
    migrations = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        migrations.append(
            Migration(int(match["version"]), match["name"], entry.read_text(encoding="utf-8"))
        )
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return migrations


_CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def apply_migrations(conninfo: str, *, connect_timeout: float = 10.0) -> list[Migration]:
    """Apply the migrations the database lacks; returns the ones applied by this call.

    Safe to run any number of times and from several processes at once.
    Raises psycopg.OperationalError when the database cannot be reached and
    MigrationError when an applied migration's file was changed afterwards.
    """
    migrations = load_migrations()
    applied_now: list[Migration] = []
    with psycopg.connect(
        conninfo, autocommit=True, connect_timeout=max(1, round(connect_timeout))
    ) as conn:
        _take_lock(conn)
        try:
            conn.execute(_CREATE_HISTORY)
            rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
            recorded: dict[int, str] = dict(rows)
            for migration in migrations:
                checksum = recorded.get(migration.version)
                if checksum is not None:
                    if checksum != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed "
                            "after it was applied; add a new migration instead"
                        )
                    continue
                logger.info("Applying migration %04d_%s", migration.version, migration.name)
                with conn.transaction():
                    conn.execute(sql.SQL(migration.sql))
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    logger.info(
        "Database schema is at version %d (%d migration(s) applied now)",
        migrations[-1].version if migrations else 0,
        len(applied_now),
    )
    return applied_now


def _take_lock(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """The runner's advisory lock; says so when another runner holds it."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
    if row is not None and row[0]:
        return
    logger.info("Another migration runner holds the migration lock; waiting for it...")
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))


def run_migrations(conninfo: str | None, *, connect_timeout: float) -> int:
    """`payments-service migrate` and MIGRATE_ON_STARTUP: migrate, return an exit status."""
    if conninfo is None:
        logger.error("Cannot migrate: DATABASE_URL is not set")
        return 2
    try:
        apply_migrations(conninfo, connect_timeout=connect_timeout)
    except psycopg.Error as error:
        # The message never contains the password; the URL itself is not logged.
        logger.error("Cannot migrate: database error %s: %s", type(error).__name__, error)
        return 1
    except MigrationError as error:
        logger.error("Cannot migrate: %s", error)
        return 1
    return 0
