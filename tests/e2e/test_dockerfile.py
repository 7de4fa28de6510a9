"""The Dockerfile, checked statically: hadolint and the facts the chart and the compose file
rely on. (checkov runs on it in test_manifests, in one pass with the rendered chart;
test_image builds it with podman and runs the image.)"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib

import pytest

from tests.support.chart import assert_tool_passes, manifests, render, single_object
from tests.support.dockerfile import DOCKERFILE, instructions, values_of
from tests.support.environment import ROOT

pytestmark = pytest.mark.tools


def test_hadolint_passes() -> None:
    assert_tool_passes("hadolint", "--failure-threshold", "info", str(DOCKERFILE))


def test_base_images_are_pinned_to_an_exact_version() -> None:
    # Both stages name the PYTHON_IMAGE build argument, declared before the first FROM.
    keywords = [keyword for keyword, _ in instructions()]
    assert keywords.index("ARG") < keywords.index("FROM")
    defaults = dict(value.partition("=")[::2] for value in values_of("ARG"))
    bases = [re.split(r"\s+", value)[0] for value in values_of("FROM")]
    assert bases == ["${PYTHON_IMAGE}"] * 2, "the venv's interpreter link needs the same Python"
    assert re.fullmatch(
        r"python:\d+\.\d+\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", defaults["PYTHON_IMAGE"]
    )


def test_runs_as_a_numeric_non_root_user_matching_the_chart() -> None:
    (user,) = values_of("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    deployment = single_object(manifests(render()), "Deployment")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_entrypoint_is_the_charts_command_in_exec_form() -> None:
    (entrypoint,) = values_of("ENTRYPOINT")
    command = json.loads(entrypoint)
    (container,) = single_object(manifests(render()), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert command == container["command"]
    (stop,) = values_of("STOPSIGNAL")
    assert stop == "SIGTERM"


def test_exposes_the_default_ports_of_the_service() -> None:
    from payments_service.config import Settings

    exposed = {int(port) for value in values_of("EXPOSE") for port in value.split()}
    fields = Settings.model_fields
    assert {fields["port"].default, fields["metrics_port"].default} <= exposed


def test_healthcheck_runs_the_projects_cli() -> None:
    (healthcheck,) = values_of("HEALTHCHECK")
    assert "payments-client" in healthcheck
    assert " health" in healthcheck
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "payments-client" in scripts


def test_dependencies_come_from_lock_files_with_hashes() -> None:
    runs = " ".join(values_of("RUN"))
    assert "--require-hashes" in runs
    for lock in ("requirements/runtime.txt", "requirements/build.txt"):
        text = (ROOT / lock).read_text()
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==\S+", text, flags=re.MULTILINE)
        assert pins, lock
        assert text.count("--hash=sha256:") >= len(pins), lock
    runtime = (ROOT / "requirements" / "runtime.txt").read_text().lower()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in dependencies:
        name = re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower()
        assert re.search(rf"^{re.escape(name)}==", runtime, flags=re.MULTILINE), (
            f"{name} is in pyproject.toml but not in requirements/runtime.txt: run make lock"
        )


def test_build_context_holds_what_the_copies_need() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
                keep = negate
        return keep

    for copy in values_of("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, _destination = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert included(source), f"{source} is excluded by .dockerignore"
    assert not included("tests/conftest.py")
    assert not included(".venv/bin/python")
    assert not included(".git/config")
    assert not included(".env")
