"""The README says the same true things as the code: settings and make targets; the
licence, the changelog and .env.example agree with the project's metadata."""

from __future__ import annotations

import re
import tomllib

from payments_service import __version__
from payments_service.config import Settings, default_value, settings_env_file
from tests.support.environment import ROOT

README = (ROOT / "README.md").read_text()


def settings_table() -> str:
    """The README's configuration table, as the Settings class defines it."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = default_value(name)
        shown = "(unset)" if default is None else f"`{default}`"
        rows.append(f"| `{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def test_readme_configuration_table_matches_the_settings() -> None:
    table = settings_table()
    assert table in README, "README's configuration table is stale; it should read:\n" + table


def test_readme_mentions_every_make_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-z][a-z0-9-]*):.*## ", makefile, flags=re.MULTILINE)
    assert {"run", "test", "help"} <= set(targets)
    missing = [t for t in targets if f"make {t}" not in README]
    assert not missing, f"README does not mention: {missing}"


def test_env_example_is_generated_from_the_settings() -> None:
    expected = settings_env_file()
    assert (ROOT / ".env.example").read_text() == expected, (
        ".env.example is stale: run `make env-example`"
    )
    for name in Settings.model_fields:
        assert f"{name.upper()}=" in expected


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_licence_file_is_the_mit_licence_the_metadata_and_readme_name() -> None:
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n\nCopyright (c) ")
    assert "Permission is hereby granted, free of charge" in licence
    assert (PYPROJECT["license"], PYPROJECT["license-files"]) == ("MIT", ["LICENSE"])
    assert "## License\n\nMIT: see [LICENSE](LICENSE)." in README


KEEP_A_CHANGELOG_SECTIONS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_the_changelog_starts_with_the_version_the_code_reports() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "[Keep a Changelog](https://keepachangelog.com/" in changelog
    versions = re.findall(
        r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d\d-\d\d|Unreleased)$", changelog, re.M
    )
    assert versions, "no '## [x.y.z] - YYYY-MM-DD' (or Unreleased) heading"
    assert versions[0][0] == PYPROJECT["version"] == __version__
    assert set(re.findall(r"^### (.+)$", changelog, re.M)) <= KEEP_A_CHANGELOG_SECTIONS
