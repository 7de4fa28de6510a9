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
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


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
TracesExporter = Annotated[Literal["otlp", "console", "none"], BeforeValidator(_lower)]
#: The propagators OTEL_PROPAGATORS may name: those the OpenTelemetry API ships.
PROPAGATORS = ("tracecontext", "baggage", "none")

#: libpq's sslmode values; libpq itself would refuse another one only when connecting.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class Settings(BaseSettings):
    """Every setting of the service, read from environment variables of the same name.

    Names are matched case-insensitively (pydantic-settings' default): ``PORT`` and
    ``port`` are the same setting.
    """

    model_config = SettingsConfigDict(case_sensitive=False, frozen=True, extra="ignore")

    port: int = Field(7000, ge=1, le=65535, description="gRPC port to listen on")
    host: str = Field(
        "[::]", min_length=1, description="address to bind; [::] means every interface"
    )
    max_workers: int = Field(
        10,
        ge=1,
        le=1000,
        description="calls handled at once; more wait their turn, up to MAX_CONCURRENT_RPCS",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text for people, json for log collectors"
    )
    slow_call_seconds: float = Field(
        0.25,
        ge=0,
        le=3600,
        description="the access log has a line at INFO for every failed call and every call "
        "slower than this; other calls only at DEBUG",
    )
    grace_period_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="on SIGTERM/SIGINT, how long calls in flight may take to finish",
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
        description="most database connections at once (MAX_WORKERS + 1 avoids waits)",
    )
    database_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="limit for one database operation: waiting for a connection, "
        "connecting and the query together",
    )
    migrate_on_startup: bool = Field(
        False, description="apply database migrations (under an advisory lock) before serving"
    )
    # Observability. The OTEL_* names are OpenTelemetry's standard variables.
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Prometheus /metrics port; 0 disables metrics"
    )
    metrics_host: str | None = Field(
        None, min_length=1, description="address /metrics binds (unset: the same as HOST)"
    )
    otel_sdk_disabled: bool = Field(False, description="true turns tracing off entirely")
    otel_service_name: str = Field(
        "payments-service", min_length=1, description="service.name of the traces"
    )
    otel_traces_exporter: TracesExporter = Field(
        "otlp",
        description="otlp (to the endpoint below), console (spans printed to stdout) or none",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="OTLP/gRPC collector, e.g. http://jaeger:4317; with the otlp exporter "
        "and no endpoint, no span is recorded",
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None, description="OTLP/gRPC endpoint for traces only (wins over the one above)"
    )
    otel_traces_sampler: TracesSampler = Field(
        "parentbased_always_on", description=f"one of {', '.join(TRACES_SAMPLERS)}"
    )
    otel_traces_sampler_arg: float = Field(
        1.0, ge=0, le=1, description="sampling ratio for the *traceidratio samplers"
    )
    otel_propagators: str = Field(
        "tracecontext,baggage",
        description="comma-separated trace context formats read from callers: "
        f"{', '.join(PROPAGATORS)}",
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
        description="calls in progress or waiting their turn at once; more are refused "
        "with RESOURCE_EXHAUSTED (0: no cap)",
    )
    max_concurrent_streams: int = Field(
        100,
        ge=1,
        le=10_000,
        description="HTTP/2 streams one connection may have open at once "
        "(also what gRPC's rapid-reset defence works from)",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="client connections to PORT at once; more are closed at once "
        "(never more than the file-descriptor limit leaves room for)",
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
        None,
        description="PEM server certificate chain; with TLS_KEY_FILE turns TLS on "
        "(re-read when the file changes)",
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
    health_host: str | None = Field(
        None, min_length=1, description="address HEALTH_PORT binds (unset: the same as HOST)"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_log_level(cls, level: object) -> object:
        levels = get_args(Settings.model_fields["log_level"].annotation)
        if isinstance(level, str) and level.strip().upper() in levels:
            return level.strip().upper()
        raise ValueError(f"must be one of {', '.join(levels)}")

    @field_validator("otel_propagators")
    @classmethod
    def _known_propagators(cls, names: str) -> str:
        unknown = [name for name in _split(names) if name not in PROPAGATORS]
        if unknown:
            raise ValueError(
                f"unknown propagator {unknown[0]!r}: this build has {', '.join(PROPAGATORS)}"
            )
        return names

    @field_validator("database_url")
    @classmethod
    def _usable_database_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            problem = database_url_problem(url.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        return url

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Checks across settings; each message names the variables it is about."""
        problems = [
            *self._storage_problems(),
            *self._port_problems(),
            *self._tls_problems(),
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _storage_problems(self) -> list[str]:
        problems = []
        if self.storage_backend == "postgres" and self.database_url is None:
            problems.append("DATABASE_URL=(unset): required when STORAGE_BACKEND=postgres")
        if self.database_pool_max_size < self.database_pool_min_size:
            problems.append(
                f"DATABASE_POOL_MAX_SIZE={self.database_pool_max_size}: must not be below "
                f"DATABASE_POOL_MIN_SIZE={self.database_pool_min_size}"
            )
        return problems

    def _port_problems(self) -> list[str]:
        """Each listening port differs from the others (0 opens none)."""
        problems = []
        taken = {self.port: "PORT"}
        for name in ("metrics_port", "health_port"):
            port = getattr(self, name)
            if port != 0 and port in taken:
                problems.append(f"{name.upper()}={port}: must differ from {taken[port]}")
            taken.setdefault(port, name.upper())
        return problems

    def _tls_problems(self) -> list[str]:
        certificate, key, ca = self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file
        pair = f"TLS_CERT_FILE={_shown(certificate)}, TLS_KEY_FILE={_shown(key)}"
        if (certificate is None) != (key is None):
            return [f"{pair}: set both or neither"]
        if ca is not None and certificate is None:
            return [
                f"TLS_CLIENT_CA_FILE={_shown(ca)}: needs TLS_CERT_FILE and TLS_KEY_FILE "
                "(mTLS runs over TLS)"
            ]
        problems = []
        if certificate is not None and key is not None:
            problem = certificate_problem(certificate, key)
            if problem is not None:
                problems.append(f"{pair}: {problem}")
        if ca is not None:
            try:
                _tls_context().load_verify_locations(cafile=ca)
            except (ssl.SSLError, OSError) as error:
                problems.append(
                    f"TLS_CLIENT_CA_FILE={_shown(ca)}: is not a PEM CA certificate bundle "
                    f"({error.__class__.__name__})"
                )
        return problems

    # -- what the settings imply ---------------------------------------------------------

    @property
    def database_conninfo(self) -> str | None:
        """DATABASE_URL in clear text, for connecting only: never log it."""
        return None if self.database_url is None else self.database_url.get_secret_value()

    @property
    def otlp_traces_endpoint(self) -> str | None:
        """Where spans are exported: the traces endpoint, else the general one."""
        return self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint

    @property
    def concurrency_cap(self) -> int | None:
        """MAX_CONCURRENT_RPCS, None when 0 (no cap)."""
        return self.max_concurrent_rpcs or None

    @property
    def metrics_bind_host(self) -> str:
        return self.metrics_host or self.host

    @property
    def health_bind_host(self) -> str:
        return self.health_host or self.host

    @property
    def propagators(self) -> tuple[str, ...]:
        """OTEL_PROPAGATORS as a list, "none" taken out."""
        return tuple(name for name in _split(self.otel_propagators) if name != "none")


def _shown(path: Path | None) -> str:
    return "(unset)" if path is None else repr(str(path))


def _split(names: str) -> list[str]:
    return [name.strip().lower() for name in names.split(",") if name.strip()]


def _tls_context() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)


def certificate_problem(certificate: Path, key: Path) -> str | None:
    """Why ``certificate`` and ``key`` are not a usable pair, or None.

    The stdlib parses the PEM and checks that the key matches, as gRPC will.
    """
    try:
        _tls_context().load_cert_chain(certificate, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as error:
        return (
            "are not a PEM certificate chain and its unencrypted private key "
            f"({error.__class__.__name__})"
        )
    return None


def database_url_problem(url: str) -> str | None:
    """What is wrong with a PostgreSQL URL, in words that never quote it, or None.

    libpq's own messages may quote the text around the mistake, which can be the password.
    """
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    _scheme, separator, rest = url.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    if separator and authority.count("@") > 1:  # libpq would take part of it for the host
        return (
            "is not a valid URL: an @ in the user name or password must be written "
            "percent-encoded (%40)"
        )
    try:
        options = conninfo_to_dict(url)
    except ProgrammingError as error:
        message = str(error)
        if "percent-encod" in message:
            return (
                "is not a valid URL: a % must start a percent-encoded character; "
                "write special characters in the password encoded (% as %25, @ as %40)"
            )
        if "invalid URI query parameter" in message or "invalid connection option" in message:
            return "names a connection option PostgreSQL does not know"
        return "is not a PostgreSQL URL (postgresql://user:password@host:5432/dbname)"
    sslmode = options.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        return f"sslmode must be one of {', '.join(SSL_MODES)}"
    for port in str(options.get("port") or "5432").split(","):
        if not (port.isdigit() and 1 <= int(port) <= 65535):
            return "the port must be a number from 1 to 65535"
    return None


class ConfigurationError(Exception):
    """The environment holds an invalid setting. The message is one readable line."""


class ListenError(Exception):
    """A port the settings name cannot be listened on. The message is one readable line."""

    @classmethod
    def for_port(cls, setting: str, host: str, port: int) -> ListenError:
        return cls(
            f"{setting}={port}: cannot listen on {host}:{port} (in use by another process, "
            f"or not an address of this host); choose another {setting}"
        )


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad variable, the value given (never a secret's) and the rule."""
    problems = []
    for item in error.errors(include_url=False):
        name = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if not name:  # a check across settings: its message names them
            problems.append(message)
            continue
        field = Settings.model_fields.get(name)
        secret = field is not None and "Secret" in str(field.annotation)
        shown = "" if secret else f"={item['input']!r}"
        problems.append(f"{name.upper()}{shown}: {message}")
    return "invalid configuration: " + "; ".join(problems)


def load_settings() -> Settings:
    """Read the settings from the environment, or raise ConfigurationError."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(describe_validation_error(error)) from None


def default_value(name: str) -> str | None:
    """The default of setting ``name`` as it is written in the environment (``true``,
    ``7000``), or None when it is unset by default."""
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    if default is None:
        return None
    return str(default).lower() if isinstance(default, bool) else str(default)


def settings_help() -> str:
    """A table of every environment variable with its default, for --help."""
    lines = ["environment variables (names are case-insensitive):"]
    for name, field in Settings.model_fields.items():
        shown = default_value(name) or "unset"
        lines.append(f"  {name.upper():<34} {field.description} (default: {shown})")
    return "\n".join(lines)


def settings_env_file() -> str:
    """``.env.example``: every setting with its description and its default.

    A setting that is unset by default is a comment (an empty value would be a value).
    """
    lines = [
        "# Every setting of payments-service with its default, generated from the Settings",
        "# class by `make env-example` (a test fails when it is stale).",
        "# The service reads environment variables only, never this file: export what you",
        "# change, or hand a copy to what starts the service (`set -a; . ./my.env; set +a`,",
        "# `docker run --env-file my.env`, `env_file:` in compose). docker-compose.yml itself",
        "# takes only PORT and MAX_WORKERS from a .env file beside it.",
    ]
    for name, field in Settings.model_fields.items():
        default = default_value(name)
        lines += ["", f"# {field.description}"]
        lines.append(f"# {name.upper()}=" if default is None else f"{name.upper()}={default}")
    return "\n".join(lines) + "\n"
