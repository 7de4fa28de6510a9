"""The development tools are the locked ones, and the commit hooks check what CI checks.

requirements/dev.txt pins (with hashes) the service's dependencies at the versions the image
ships (but one, named below) and every development tool; `make install` installs exactly
that, so the tests run on what CI and the image use. .pre-commit-config.yaml runs the same
ruff and mypy as `make lint typecheck`.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from tests.support.environment import ROOT, require_tool

REQUIREMENTS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)", re.MULTILINE)


def _pins(lock: str) -> dict[NormalizedName, str]:
    text = (REQUIREMENTS / lock).read_text()
    pins = {canonicalize_name(name): version for name, version in PIN.findall(text)}
    assert pins, lock
    assert text.count("--hash=sha256:") >= len(pins), f"{lock}: a pin without its hash"
    return pins


def test_the_dev_lock_pins_every_dependency_and_tool() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = _pins("dev.txt")
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for line in [*wanted, *(REQUIREMENTS / "build.in").read_text().split()]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in dev, f"{name} is not in requirements/dev.txt: run make lock"
        assert requirement.specifier.contains(dev[name], prereleases=True), (name, dev[name])


#: Where the development environment cannot have the image's version, and why.
DIFFERENT_IN_DEV = {
    "packaging": "checkov (test_manifests' scan of the chart and the Dockerfile) needs <24",
}


def test_the_dev_lock_has_the_versions_the_image_ships() -> None:
    dev = _pins("dev.txt")
    runtime = _pins("runtime.txt")
    differ = {name: (version, dev.get(name)) for name, version in runtime.items()}
    differ = {name: pair for name, pair in differ.items() if pair[0] != pair[1]}
    assert set(differ) == set(DIFFERENT_IN_DEV), f"(runtime.txt, dev.txt): {differ}"


def test_the_tests_run_on_the_locked_versions() -> None:
    """What `make install` put in this environment is what requirements/dev.txt says."""
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }
    differ = {
        name: (version, installed.get(name))
        for name, version in _pins("dev.txt").items()
        if installed.get(name) != version
    }
    assert differ == {}, "(locked, installed): run make install"


def test_make_install_installs_the_dev_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("$(STAMP):") : makefile.index("install: $(STAMP)")]
    assert "requirements/dev.txt" in recipe.split("\n")[0]  # a new lock reinstalls
    assert "--require-hashes --requirement requirements/dev.txt" in recipe
    assert "--no-deps" in recipe  # the service itself adds nothing unlocked
    assert '".[dev]"' not in recipe


def _hooks() -> dict[str, dict[str, object]]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    return {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}


def test_the_pre_commit_config_is_valid() -> None:
    pre_commit = require_tool("pre-commit")
    result = subprocess.run(
        [pre_commit, "validate-config", ".pre-commit-config.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_hooks_run_the_linters_of_make_lint_and_typecheck() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (lint_dirs,) = set(re.findall(r"\$\(BIN\)/ruff (?:check|format --check) ([\w ]+)\n", makefile))
    hooks = _hooks()
    assert set(hooks) == {"ruff-check", "ruff-format", "mypy"}
    for hook_id, command in (("ruff-check", "ruff check"), ("ruff-format", "ruff format --check")):
        hook = hooks[hook_id]
        assert str(hook["entry"]).startswith(f".venv/bin/{command}"), hook
        assert hook["files"] == f"^({'|'.join(lint_dirs.split())})/", hook
    assert "\t$(BIN)/mypy\n" in makefile  # make typecheck: mypy with pyproject.toml's settings
    assert hooks["mypy"]["entry"] == ".venv/bin/mypy"
    assert hooks["mypy"]["pass_filenames"] is False  # the configured files, not the staged
    for hook in hooks.values():
        assert Path(ROOT / str(hook["entry"]).split()[0]).parent == ROOT / ".venv" / "bin"
