"""Settings: defaults, environment parsing, and one readable line per bad value."""

from __future__ import annotations

import pytest

from payments_service.config import ConfigurationError, Settings, load_settings


def test_defaults_match_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    settings = load_settings()
    assert settings.port == 7000
    assert settings.host == "[::]"
    assert settings.max_workers == 10
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.grace_period_seconds == 5
    assert settings.reflection_enabled is True


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9090")
    monkeypatch.setenv("MAX_WORKERS", "20")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("REFLECTION_ENABLED", "false")
    settings = load_settings()
    assert (settings.port, settings.max_workers, settings.log_level) == (9090, 20, "DEBUG")
    assert settings.reflection_enabled is False


def test_every_bad_variable_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "70000")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "PORT='70000'" in message
    assert "LOG_FORMAT='xml'" in message
