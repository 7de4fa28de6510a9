"""The developer commands as a new user meets them: make help, shell, coverage, clean, and
the settings file .env.example."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.environment import ROOT

VENV_BIN = Path(sys.executable).parent


def _clean_environment() -> dict[str, str]:
    """The environment of a shell that never activated the virtual environment."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != VENV_BIN]
    environment = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "MAKEFLAGS"}}
    return {**environment, "PATH": os.pathsep.join(path)}


def _make(
    *args: str, cwd: Path = ROOT, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        env=env or _clean_environment(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_help_colours_a_terminal_and_nothing_else() -> None:
    piped = _make("help")
    assert piped.returncode == 0, piped.stderr
    assert "\033" not in piped.stdout
    assert "  run " in piped.stdout

    controller, terminal = pty.openpty()
    try:
        subprocess.run(
            ["make", "--no-print-directory", "help"],
            cwd=ROOT,
            stdout=terminal,
            check=True,
            timeout=60,
        )
        coloured = os.read(controller, 65536).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert "\033[36m" in coloured


TOOLS = ["python", "payments-service", "payments-client", "grpcurl", "pytest"]


@pytest.mark.parametrize("user_shell", ["bash", None], ids=["SHELL=bash", "no SHELL (sh)"])
def test_shell_puts_the_virtual_environment_first_on_path(user_shell: str | None) -> None:
    environment = {k: v for k, v in _clean_environment().items() if k != "SHELL"}
    if user_shell:
        environment["SHELL"] = shutil.which(user_shell) or user_shell
    # POSIX sh's `command -v` looks up one name per call
    commands = "".join(f"command -v {tool}\n" for tool in TOOLS) + (
        "python -c 'import payments_service, sys; print(sys.prefix)'\n"
    )
    result = _make("shell", stdin=commands, env=environment)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # (make first reinstalls .venv when pyproject.toml changed since; that prints more)
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("make shell: ")) :]
    assert lines[1:6] == [str(ROOT / ".venv" / "bin" / tool) for tool in TOOLS]
    assert lines[6] == str(ROOT / ".venv")


def test_coverage_measures_branches_and_writes_the_html_report(tmp_path: Path) -> None:
    html = tmp_path / "htmlcov"
    env = {**_clean_environment(), "COVERAGE_FILE": str(tmp_path / ".coverage")}
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "coverage",
            "TESTS=tests/integration/test_client.py::test_health_prints_serving_and_exits_0",
            f"HTMLCOV={html}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("Name "))
    assert header.split() == ["Name", "Stmts", "Miss", "Branch", "BrPart", "Cover", "Missing"]
    # The CLI ran in a process of its own, and was measured there.
    client = next(
        line for line in result.stdout.splitlines() if "payments_service/client.py" in line
    )
    assert int(client.split()[2]) < int(client.split()[1]) / 2, client
    assert (html / "index.html").is_file()


def test_clean_leaves_no_build_output(tmp_path: Path) -> None:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    made = [
        ".venv/bin",
        "app/payments_service.egg-info",
        "app/payments_service/__pycache__",
        "htmlcov",
        ".pytest_cache",
        "build",
    ]
    for directory in made:
        (tmp_path / directory).mkdir(parents=True)
    for file in (".coverage", ".coverage.host.1234.XyZ", "app/payments_service/server.py"):
        (tmp_path / file).touch()

    result = _make("clean", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not [
        d for d in [*made, ".coverage", ".coverage.host.1234.XyZ"] if (tmp_path / d).exists()
    ]
    assert (tmp_path / "app/payments_service/server.py").exists()


def test_env_example_sourced_by_a_shell_gives_the_defaults() -> None:
    """Every line of .env.example is valid shell and a valid value; together they are the
    defaults (compared with a process that has no setting in its environment)."""
    show = f"{sys.executable} -c '{SHOW_SETTINGS}'"
    bare = {"PATH": os.environ.get("PATH", "")}
    sourced, defaults = (
        subprocess.run(
            ["sh", "-c", script], cwd=ROOT, env=bare, capture_output=True, text=True, check=True
        )
        for script in (f"set -a; . ./.env.example; set +a; {show}", show)
    )
    assert json.loads(sourced.stdout) == json.loads(defaults.stdout)
    assert "PORT" in (ROOT / ".env.example").read_text()


SHOW_SETTINGS = "from payments_service.config import Settings; print(Settings().model_dump_json())"
