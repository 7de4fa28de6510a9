"""The GitHub Actions workflows: actionlint passes; every action is pinned to a commit; they
call make targets that exist, with the CI value, database and Python the project expects."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from tests.support.chart import assert_tool_passes
from tests.support.environment import CI_TRUE, ROOT
from tests.support.postgres import DEFAULT_URL

pytestmark = pytest.mark.tools

WORKFLOWS = ROOT / ".github" / "workflows"


def test_actionlint_passes() -> None:
    files = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    assert files
    assert_tool_passes("actionlint", *files)


def test_workflows_run_make_targets_that_exist() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    used: set[str] = set()
    for path in WORKFLOWS.glob("*.yml"):
        for step in _steps(path.name):
            for match in re.finditer(r"\bmake ((?:[a-z][a-z-]* ?)+)", step.get("run", "")):
                used.update(word for word in match[1].split() if "=" not in word)
    assert {"lint", "typecheck", "test", "kind-up", "kind-smoke", "kind-down"} <= used
    assert used <= targets, used - targets


def _steps(workflow: str) -> list[dict[str, Any]]:
    jobs = yaml.safe_load((WORKFLOWS / workflow).read_text())["jobs"]
    return [step for job in jobs.values() for step in job["steps"]]


def test_every_action_is_pinned_to_a_commit_with_its_version_named() -> None:
    """A tag can be moved to other code; a commit cannot. The comment says which release
    the commit is, for the reader and for update tools."""
    pinned = re.compile(r"^\s*(?:- )?uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+\.\d+\.\d+$")
    for path in sorted(WORKFLOWS.glob("*.yml")):
        uses = [line for line in path.read_text().splitlines() if re.match(r"^\s*(- )?uses:", line)]
        steps = [step for step in _steps(path.name) if "uses" in step]
        assert len(uses) == len(steps) > 0, path.name  # every uses: is on a line of its own
        for line in uses:
            assert pinned.match(line), f"{path.name}: not pinned to a commit SHA: {line.strip()}"


def test_ci_sets_a_ci_value_the_tests_recognise() -> None:
    """Under CI a missing tool or database fails its tests; only if the tests read the
    workflow's CI value as true."""
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    assert ci["env"]["CI"].lower() in CI_TRUE
    (run,) = [step["run"] for step in _steps("ci.yml") if ".ci/run" in step.get("run", "")]
    assert re.search(r"\bCI=(\S+)", run)[1].lower() in CI_TRUE  # type: ignore[index]


def test_ci_postgres_is_the_server_the_tests_connect_to_by_default() -> None:
    """The service container's database, port and authentication are what
    tests/support/postgres.py's DEFAULT_URL (no password) connects to."""
    postgres = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())["jobs"]["test"]["services"][
        "postgres"
    ]
    expected = conninfo_to_dict(DEFAULT_URL)
    assert "password" not in expected
    assert postgres["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert postgres["env"].get("POSTGRES_USER", "postgres") == expected["user"]
    assert postgres["env"]["POSTGRES_DB"] == expected["dbname"]
    assert f"{expected['port']}:5432" in postgres["ports"]


def test_workflows_set_up_the_oldest_python_the_project_supports() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    oldest = re.fullmatch(r">=(\d+\.\d+)", requires)
    assert oldest is not None, requires
    for path in sorted(WORKFLOWS.glob("*.yml")):
        versions = [
            step["with"]["python-version"]
            for step in _steps(path.name)
            if step.get("uses", "").startswith("actions/setup-python@")
        ]
        assert versions == [oldest[1]], path.name


def test_kind_workflow_covers_every_store_up_sh_accepts_and_helm_test() -> None:
    kind = yaml.safe_load((WORKFLOWS / "kind-e2e.yml").read_text())["jobs"]["kind"]
    up = (ROOT / "k8s" / "kind" / "up.sh").read_text()
    accepted = re.search(r'case "\$storage" in\s+([\w|]+)\)', up)
    assert accepted is not None, "k8s/kind/up.sh no longer checks STORAGE"
    assert sorted(kind["strategy"]["matrix"]["storage"]) == sorted(accepted[1].split("|"))
    runs = " ".join(step.get("run", "") for step in kind["steps"])
    assert "STORAGE=${{ matrix.storage }}" in runs
    assert "helm test payments-service" in runs


def _make_targets(workflow: str) -> list[str]:
    runs = " ".join(step.get("run", "") for step in _steps(workflow))
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
