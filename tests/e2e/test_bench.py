"""The benchmark as the README runs it: every target starts, serves both methods without an
error, and gets its row. (Speed is never asserted: the figures are the benchmark's job.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.targets import TARGETS
from tests.support.environment import ROOT
from tests.support.postgres import require_postgres

pytestmark = pytest.mark.postgres  # the `postgres` target needs the server

METHODS = ("RequestPayment", "GetPayment")


def test_every_benchmark_target_serves_both_methods_without_errors() -> None:
    require_postgres()
    short_run = ("--concurrency", "4", "--rounds", "1", "--duration", "0.3", "--warmup", "0.1")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--targets", *TARGETS, "--methods", *METHODS, *short_run],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    rows: dict[tuple[str, str], list[str]] = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[0] in TARGETS and fields[1] in METHODS:
            rows[fields[0], fields[1]] = fields
    for name in TARGETS:
        for method in METHODS:
            assert (name, method) in rows, f"no row for {name} {method}:\n{result.stdout}"
            fields = rows[name, method]
            row = " ".join(fields)
            assert float(fields[3].replace(",", "")) > 0, f"no call served: {row}"
            assert int(fields[6]) == 0, f"calls failed: {row}"
