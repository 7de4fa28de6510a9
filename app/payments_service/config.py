"""Configuration: one Settings class, read from the environment once in main()."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]


class Settings(BaseSettings):
    """Every setting of the service. Each field is read from the upper-case env variable."""

    model_config = SettingsConfigDict(case_sensitive=False, frozen=True, extra="ignore")

    port: int = Field(7000, ge=1, le=65535, description="gRPC port to listen on")
    host: str = Field(
        "[::]", min_length=1, description="address to bind; [::] means every interface"
    )
    max_workers: int = Field(
        10, ge=1, le=1000, description="threads handling calls (at most this many at once)"
    )
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    log_format: Literal["text", "json"] = Field(
        "text", description="text for people, json for log collectors"
    )
    grace_period_seconds: float = Field(
        5.0, ge=0, le=300, description="on SIGTERM/SIGINT, how long calls in flight may finish"
    )
    reflection_enabled: bool = Field(
        True, description="serve gRPC server reflection (what grpcurl uses to discover the API)"
    )


class ConfigurationError(Exception):
    """The environment holds an invalid setting. The message is one readable line."""


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad variable, the value given and what is allowed."""
    problems = []
    for item in error.errors(include_url=False):
        name = ".".join(str(part) for part in item["loc"]) or "settings"
        field = Settings.model_fields.get(name)
        secret = field is not None and "Secret" in str(field.annotation)
        shown = "" if secret else f"={item['input']!r}"
        name = name.upper()
        problems.append(f"{name}{shown}: {item['msg']}")
    return "invalid configuration: " + "; ".join(problems)


def load_settings() -> Settings:
    """Read the settings from the environment, or raise ConfigurationError."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(describe_validation_error(error)) from None


def settings_help() -> str:
    """A table of every environment variable with its default, for --help."""
    lines = ["environment variables:"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        lines.append(f"  {name.upper():<28} {field.description} (default: {default})")
    return "\n".join(lines)
