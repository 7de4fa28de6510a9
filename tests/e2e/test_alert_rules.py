"""The alert rules are valid and behave: `promtool check rules` and `promtool test rules`."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT, require_tool

pytestmark = pytest.mark.tools

ALERTS = ROOT / "helm" / "payments-service" / "files" / "alerts.yaml"
ALERT_TESTS = ROOT / "tests" / "e2e" / "alerts_test.yaml"


def test_alert_rules_are_valid() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout


def test_each_alert_fires_and_stays_quiet_as_specified() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=ALERT_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
