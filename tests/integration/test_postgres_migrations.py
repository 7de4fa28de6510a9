"""`payments-service migrate` and MIGRATE_ON_STARTUP against a real, empty database."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg
import pytest

from payments_service.domain.errors import StoreUnavailableError
from payments_service.domain.payment import Payment, PaymentRequest
from payments_service.storage.migrate import (
    ADVISORY_LOCK_KEY,
    MigrationError,
    apply_migrations,
    load_migrations,
)
from payments_service.storage.postgres import PostgresPaymentRepository
from tests.support.environment import ROOT
from tests.support.network import free_port
from tests.support.postgres import replica_env, rows
from tests.support.processes import start_server_process, stop_process, wait_until_ready

pytestmark = pytest.mark.postgres


def _migrate(url: str) -> subprocess.Popen[str]:
    return start_server_process(
        {"DATABASE_URL": url, "LOG_LEVEL": "INFO"}, args=("-m", "payments_service", "migrate")
    )


def _history(url: str) -> list[tuple[object, ...]]:
    return rows(url, "SELECT version, name, checksum FROM schema_migrations ORDER BY version")


def _expected_history() -> list[tuple[object, ...]]:
    return [(m.version, m.name, m.checksum) for m in load_migrations()]


def test_migrate_command_applies_once_and_is_safe_to_repeat(empty_database: str) -> None:
    first = _migrate(empty_database)
    output = first.communicate(timeout=60)[0]
    assert first.returncode == 0, output
    assert "Applying migration 0001_create_payments" in output
    assert empty_database not in output  # the URL (a secret) is never logged

    second = _migrate(empty_database)
    output = second.communicate(timeout=60)[0]
    assert second.returncode == 0, output
    assert "Applying migration" not in output
    assert _history(empty_database) == _expected_history()


def test_migrations_from_several_processes_at_once_apply_each_file_once(
    empty_database: str,
) -> None:
    # Hold the runner's lock until all four wait for it, so they really do run at once.
    with psycopg.connect(empty_database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        processes = [_migrate(empty_database) for _ in range(4)]
        deadline = time.monotonic() + 30
        while _waiting_for_advisory_lock(holder) < 4:
            assert time.monotonic() < deadline, "the migrate processes never reached the lock"
            time.sleep(0.1)
        holder.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], outputs
    assert sum("Applying migration 0001_create_payments" in o for o in outputs) == 1
    assert _history(empty_database) == _expected_history()


def _waiting_for_advisory_lock(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def test_a_changed_migration_file_is_refused(empty_database: str) -> None:
    apply_migrations(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        apply_migrations(empty_database)


def test_migrate_without_a_reachable_database_exits_1() -> None:
    port = free_port()  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "payments_service", "migrate"],
        env={"DATABASE_URL": f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/none"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Cannot migrate" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_server_with_migrate_on_startup_creates_the_schema_and_serves(
    empty_database: str,
) -> None:
    port = free_port()
    process = start_server_process(
        replica_env(empty_database, port, MIGRATE_ON_STARTUP="true", LOG_LEVEL="INFO")
    )
    try:
        wait_until_ready(port)
    finally:
        output = stop_process(process)
    assert process.returncode == 0, output
    assert "Applying migration 0001_create_payments" in output
    assert _history(empty_database) == _expected_history()


async def test_server_without_schema_reports_unavailable_not_internal(
    empty_database: str,
) -> None:
    # Forgetting to migrate is an operator error the caller cannot fix: UNAVAILABLE,
    # with the cause in the server log.
    repository = await PostgresPaymentRepository.open(empty_database, min_size=0, max_size=2)
    payment = Payment.new(
        PaymentRequest(amount_minor=1, currency="USD", order_id="o", idempotency_key="k" * 8)
    )
    try:
        with pytest.raises(StoreUnavailableError):
            await repository.add_if_absent(payment)
    finally:
        await repository.close()
