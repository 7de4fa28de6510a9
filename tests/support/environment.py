"""Where the project is, whether this is CI, and the tools and services a test needs.

A test whose tool or service is missing is skipped with the reason locally; with CI=true
it fails instead (see :func:`require`).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The values of CI that mean "this is CI" (GitHub Actions sets "true").
CI_TRUE = frozenset({"1", "true", "yes"})
IN_CI = os.environ.get("CI", "").lower() in CI_TRUE


def require(condition: bool, reason: str) -> None:
    """Skip when a needed tool or service is missing, but fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing requirement is a failure, not a skip)")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of an executable (looked up in .venv/bin first, then PATH)."""
    venv_bin = str(Path(sys.executable).parent)
    path = shutil.which(name, path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    require(path is not None, f"{name} is not installed")
    assert path is not None
    return path
