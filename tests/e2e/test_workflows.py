"""The GitHub Actions workflows: actionlint passes, and they call targets that exist."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.chart import assert_tool_passes
from tests.support.environment import ROOT

pytestmark = pytest.mark.tools

WORKFLOWS = ROOT / ".github" / "workflows"


def test_actionlint_passes() -> None:
    files = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    assert files
    assert_tool_passes("actionlint", *files)


def test_workflows_run_make_targets_that_exist() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    used = set()
    for path in WORKFLOWS.glob("*.yml"):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job["steps"]:
                for match in re.finditer(r"\bmake ((?:[a-z][a-z-]* ?)+)", step.get("run", "")):
                    used.update(word for word in match[1].split() if "=" not in word)
    assert {"lint", "typecheck", "test", "kind-up", "kind-smoke", "kind-down"} <= used
    assert used <= targets, used - targets


def test_ci_runs_tests_with_ci_true_and_postgres() -> None:
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    assert ci["env"]["CI"] == "true"
    postgres = ci["jobs"]["test"]["services"]["postgres"]
    assert postgres["env"]["POSTGRES_DB"] == "test"
    assert "5432:5432" in postgres["ports"]


def test_kind_workflow_covers_both_stores_and_helm_test() -> None:
    kind = yaml.safe_load((WORKFLOWS / "kind-e2e.yml").read_text())["jobs"]["kind"]
    assert kind["strategy"]["matrix"]["storage"] == ["memory", "postgres"]
    runs = " ".join(step.get("run", "") for step in kind["steps"])
    assert "helm test payments-service" in runs


def _make_targets(workflow: str) -> list[str]:
    steps = yaml.safe_load((WORKFLOWS / workflow).read_text())["jobs"]
    runs = " ".join(step.get("run", "") for job in steps.values() for step in job["steps"])
    return re.findall(r"\bmake ([a-z][a-z-]*)", runs)


def test_the_readme_says_what_each_workflow_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("CI is two workflows.") :].split("\n\n")[0]
    ci = (WORKFLOWS / "ci.yml").read_text()
    assert "bash .ci/run make lint typecheck test" in ci
    assert "make lint typecheck test" in (ROOT / ".ci" / "run").read_text()  # its default
    assert "`.github/workflows/ci.yml`" in paragraph
    assert "runs `.ci/run`" in paragraph
    assert "`make lint typecheck test`" in paragraph
    kind = paragraph[paragraph.index("`.github/workflows/kind-e2e.yml`") :]
    for target in _make_targets("kind-e2e.yml"):
        assert f"`make {target}`" in kind, target
    assert "`helm test`" in kind
