"""Configuration: one Settings class, read from the environment once in main()."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    BeforeValidator,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


#: The samplers OTEL_TRACES_SAMPLER may name. An unknown one is a configuration error here,
#: where the SDK alone would only warn and sample everything.
TracesSamplerName = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
TRACES_SAMPLERS: tuple[str, ...] = get_args(TracesSamplerName)
TracesSampler = Annotated[TracesSamplerName, BeforeValidator(_lower)]


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
    # Storage (see docs/storage.md).
    storage_backend: Literal["memory", "postgres"] = Field(
        "memory",
        description="memory (one process, lost on restart) or postgres (durable, shared)",
    )
    database_url: SecretStr | None = Field(
        None,
        validate_default=True,
        description="PostgreSQL URL, e.g. postgresql://user:password@host:5432/db "
        "(required when STORAGE_BACKEND=postgres; never logged)",
    )
    database_pool_min_size: int = Field(
        2, ge=0, le=100, description="database connections kept open even when idle"
    )
    database_pool_max_size: int = Field(
        10,
        ge=1,
        le=100,
        description="most database connections at once (MAX_WORKERS + 2 avoids waits)",
    )
    database_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="limit for connecting, for waiting for a pooled connection and for each query",
    )
    migrate_on_startup: bool = Field(
        False, description="apply database migrations (under an advisory lock) before serving"
    )

    @field_validator("database_url")
    @classmethod
    def _url_for_postgres(cls, url: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if url is None and info.data.get("storage_backend") == "postgres":
            raise ValueError("required when STORAGE_BACKEND=postgres")
        return url

    @field_validator("database_pool_max_size")
    @classmethod
    def _max_not_below_min(cls, max_size: int, info: ValidationInfo) -> int:
        if max_size < info.data.get("database_pool_min_size", 0):
            raise ValueError("must not be below DATABASE_POOL_MIN_SIZE")
        return max_size

    # Observability. The OTEL_* names are OpenTelemetry's standard variables.
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Prometheus /metrics port; 0 disables metrics"
    )
    otel_sdk_disabled: bool = Field(False, description="true turns tracing off entirely")
    otel_service_name: str = Field(
        "payments-service", min_length=1, description="service.name of the traces"
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None, description="OTLP/gRPC collector, e.g. http://jaeger:4317; unset: no span is recorded"
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None, description="OTLP/gRPC endpoint for traces only (wins over the one above)"
    )
    otel_traces_sampler: TracesSampler = Field(
        "parentbased_always_on", description=f"one of {', '.join(TRACES_SAMPLERS)}"
    )
    otel_traces_sampler_arg: float | None = Field(
        None, ge=0, le=1, description="sampling ratio for the *traceidratio samplers"
    )
    # Hardening: limits, connection management and TLS (see SECURITY.md).
    max_receive_message_bytes: int = Field(
        65536,
        ge=1024,
        le=64 * 1024 * 1024,
        description="largest request accepted, in bytes; larger ones get RESOURCE_EXHAUSTED",
    )
    max_concurrent_rpcs: int = Field(
        100,
        ge=0,
        le=100_000,
        description="calls in progress or queued at once; more are refused with "
        "RESOURCE_EXHAUSTED (0: no cap)",
    )
    keepalive_time_seconds: float = Field(
        60.0, gt=0, le=7200, description="ping an idle client connection after this long"
    )
    keepalive_timeout_seconds: float = Field(
        20.0, gt=0, le=600, description="close a connection whose ping is unanswered this long"
    )
    max_connection_age_seconds: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="ask clients to reconnect after this long so load rebalances (0: never)",
    )
    max_connection_age_grace_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="calls in flight on an aged connection may finish within this long",
    )
    tls_cert_file: FilePath | None = Field(
        None, description="PEM server certificate chain; with TLS_KEY_FILE turns TLS on"
    )
    tls_key_file: FilePath | None = Field(None, description="PEM private key of TLS_CERT_FILE")
    tls_client_ca_file: FilePath | None = Field(
        None, description="PEM CA bundle; when set, clients must present a certificate (mTLS)"
    )
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="plaintext port serving only grpc.health.v1 for probes (0: off)",
    )

    @field_validator("tls_key_file")
    @classmethod
    def _cert_and_key_together(cls, key: Path | None, info: ValidationInfo) -> Path | None:
        certificate = info.data.get("tls_cert_file")
        if (key is None) != (certificate is None):
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
        if key is not None and certificate is not None:
            try:  # the stdlib parses PEM and checks the key matches, as gRPC will
                _tls_context().load_cert_chain(certificate, key, password=lambda: b"")
            except (ssl.SSLError, OSError) as error:
                raise ValueError(
                    "TLS_CERT_FILE and TLS_KEY_FILE are not a PEM certificate chain and its "
                    f"unencrypted private key ({error.__class__.__name__})"
                ) from None
        return key

    @field_validator("tls_client_ca_file")
    @classmethod
    def _client_ca_needs_tls(cls, ca: Path | None, info: ValidationInfo) -> Path | None:
        if ca is not None and info.data.get("tls_cert_file") is None:
            raise ValueError("needs TLS_CERT_FILE and TLS_KEY_FILE (mTLS runs over TLS)")
        if ca is not None:
            try:
                _tls_context().load_verify_locations(cafile=ca)
            except (ssl.SSLError, OSError) as error:
                raise ValueError(
                    f"is not a PEM CA certificate bundle ({error.__class__.__name__})"
                ) from None
        return ca

    @field_validator("metrics_port", "health_port")
    @classmethod
    def _port_differs_from_those_before(cls, port: int, info: ValidationInfo) -> int:
        """Each listening port differs from the ones declared before it (0 opens none)."""
        taken = {info.data.get(name): name.upper() for name in ("port", "metrics_port")}
        if port != 0 and port in taken:
            raise ValueError(f"must differ from {taken[port]}")
        return port


def _tls_context() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)


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
