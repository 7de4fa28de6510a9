"""docker-compose.yml as Compose reads it: ${VAR:-default} interpolated."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support.environment import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR:-default} interpolation, applied to every string."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m[1], m[2] or ""), value)
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    return value


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    data = interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})
    assert isinstance(data, dict)
    return data
