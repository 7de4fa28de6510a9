"""The alert rules are valid and behave: `promtool check rules` and `promtool test rules`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.chart import manifests, render, single_object
from tests.support.environment import ROOT, require_tool

pytestmark = pytest.mark.tools

ALERTS = ROOT / "helm" / "payments-service" / "files" / "alerts.yaml"
ALERT_TESTS = ROOT / "tests" / "e2e" / "alerts_test.yaml"


def test_alert_rules_are_valid() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


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


def test_the_charts_absent_alert_watches_its_own_namespace(tmp_path: Path) -> None:
    """Staging still reports, production's pods are all gone: the production release's
    PrometheusRule fires, though the shared file's absent() alone would stay quiet."""
    promtool = require_tool("promtool")
    values = {"metrics": {"prometheusRule": {"enabled": True}}}
    rule = single_object(manifests(render(values, namespace="production")), "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    staging = (
        'payments_service_build_info{namespace="staging",job="payments-service",version="0.1.0"}'
    )
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": staging, "values": "1x20"}],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "PaymentsServiceAbsent",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "namespace": "production"},
                                "exp_annotations": {
                                    "summary": "no payments-service instance reports metrics",
                                    "description": "Prometheus has had no "
                                    "payments_service_build_info series for 5 minutes: no "
                                    "instance is running, or none is scraped.",
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool, "test", "rules", "test.yaml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
