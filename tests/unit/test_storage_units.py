"""Storage pieces that need no database: settings, connection limits, readiness, metrics."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from psycopg.conninfo import conninfo_to_dict

from payments_service.config import ConfigurationError, load_settings
from payments_service.observability.database import PoolMetricsCollector
from payments_service.readiness import ReadinessMonitor
from payments_service.storage.migrate import load_migrations
from payments_service.storage.postgres import connection_settings


def test_postgres_backend_needs_a_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "postgres")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match=r"DATABASE_URL.*required"):
        load_settings()


def test_database_url_never_appears_in_configuration_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "postgres")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2@db/payments")
    monkeypatch.setenv("DATABASE_POOL_MIN_SIZE", "9")
    monkeypatch.setenv("DATABASE_POOL_MAX_SIZE", "3")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert "DATABASE_POOL_MAX_SIZE" in str(raised.value)
    assert "hunter2" not in str(raised.value)
    monkeypatch.setenv("DATABASE_POOL_MAX_SIZE", "10")
    settings = load_settings()
    assert "hunter2" not in repr(settings) + str(settings)


def test_connections_carry_timeouts_and_keep_options_from_the_url() -> None:
    url = "postgresql://app@db:6432/payments?options=-csearch_path%3Dtenant_a"
    details = conninfo_to_dict(connection_settings(url, timeout_seconds=2.5))
    assert str(details["options"]).split(" ") == [
        "-csearch_path=tenant_a",
        "-c",
        "statement_timeout=2500",
        "-c",
        "idle_in_transaction_session_timeout=60000",
        "-c",
        "TimeZone=UTC",
    ]
    assert (details["host"], details["port"], details["dbname"]) == ("db", "6432", "payments")
    assert details["connect_timeout"] == "2"
    assert details["tcp_user_timeout"] == "2500"


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


async def test_readiness_monitor_reports_the_first_state_and_every_change() -> None:
    answers = iter([False, False, True, True, False])
    changes: list[bool] = []
    done = asyncio.Event()

    async def check() -> bool:
        answer = next(answers, None)
        if answer is None:
            done.set()
            return False
        return answer

    monitor = ReadinessMonitor(check, changes.append, interval=0.001)
    monitor.start()
    await asyncio.wait_for(done.wait(), 10)
    await monitor.stop()
    assert changes == [False, True, False]


async def test_a_check_that_raises_counts_as_not_ready() -> None:
    changes: list[bool] = []

    async def check() -> bool:
        raise RuntimeError("boom")

    monitor = ReadinessMonitor(check, changes.append, interval=60)
    monitor.start()
    while not changes:
        await asyncio.sleep(0.001)
    await monitor.stop()
    assert changes == [False]


def test_pool_statistics_become_prometheus_metrics() -> None:
    registry = CollectorRegistry()
    registry.register(
        PoolMetricsCollector(lambda: {"pool_size": 4, "pool_max": 10, "requests_wait_ms": 1500})
    )
    text = generate_latest(registry).decode()
    assert "payments_db_pool_connections 4.0" in text
    assert "payments_db_pool_max_connections 10.0" in text
    assert "payments_db_pool_wait_seconds_total 1.5" in text
