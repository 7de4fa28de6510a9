"""PostgreSQL for tests and benchmarks: a throw-away database per use, queries straight
to it, and server processes (replicas) on it.

The server is DATABASE_URL from the environment, or the local one on 127.0.0.1:5432.
Without it the tests skip locally and fail under CI=true (see ``require``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from payments_service.storage.migrate import apply_migrations
from tests.support.environment import require
from tests.support.network import free_port
from tests.support.processes import start_server_process, stop_process, wait_until_ready

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    """The PostgreSQL the tests use (a database on it that they may create databases from)."""
    return os.environ.get("DATABASE_URL") or DEFAULT_URL


def require_postgres() -> str:
    """The server URL, after checking that it answers (skip locally, fail under CI)."""
    url = server_url()
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        require(False, f"PostgreSQL is not reachable ({type(error).__name__}: {error})")
    return url


def with_database(url: str, dbname: str, **overrides: str | int) -> str:
    """``url`` pointing at ``dbname`` (and any other conninfo overrides)."""
    return make_conninfo(url, dbname=dbname, **overrides)


@contextlib.contextmanager
def fresh_database(*, migrate: bool = True) -> Iterator[str]:
    """A new, empty database (migrated unless asked not to), dropped afterwards."""
    admin_url = require_postgres()
    name = f"payments_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    try:
        if migrate:
            apply_migrations(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def port_of(url: str) -> tuple[str, int]:
    details = conninfo_to_dict(url)
    return str(details.get("host") or "127.0.0.1"), int(details.get("port") or 5432)


def replica_env(url: str, port: int, **extra: str) -> dict[str, str]:
    """The environment of a server process on ``port`` using the database at ``url``."""
    return {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "STORAGE_BACKEND": "postgres",
        "DATABASE_URL": url,
        "MAX_WORKERS": "16",
        "DATABASE_POOL_MAX_SIZE": "16",
        "LOG_LEVEL": "WARNING",  # nobody reads the pipe until the end: keep it small
        **extra,
    }


def start_replica(url: str, **extra: str) -> tuple[subprocess.Popen[str], int]:
    """A server process on a free port using the database at ``url`` (``extra``: more
    environment), once it is ready; returns it and its port."""
    port = free_port()
    process = start_server_process(replica_env(url, port, **extra))
    try:
        wait_until_ready(port)
    except TimeoutError:
        pytest.fail(f"replica did not become ready:\n{stop_process(process)}")
    return process, port


def rows(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    """Run a read-only query directly against the database (values as psycopg gives them)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()
