"""The gRPC channel arguments that bound what one client can make the server do."""

from __future__ import annotations

from payments_service.config import Settings

#: The least time a client must leave between keepalive pings. Clients that ping more
#: often get a "too_many_pings" GOAWAY after MAX_PING_STRIKES pings (gRPC's own policy).
MIN_CLIENT_PING_INTERVAL_MS = 10_000
MAX_PING_STRIKES = 2
#: A connection that has not finished its handshake (TLS, HTTP/2 preface) this long after
#: it was accepted is closed, so sockets that never speak cannot pile up: a flood of them
#: keeps the API out of reach for this long at most (docs/reliability.md).
HANDSHAKE_TIMEOUT_MS = 2_000
#: File descriptors the API port's connections may never take: the health port, /metrics,
#: the database, logging and the interpreter need them.
RESERVED_DESCRIPTORS = 256
#: The health-only port serves the kubelet: one short connection per probe.
HEALTH_MAX_CONNECTIONS = 128
HEALTH_MAX_STREAMS = 10
HEALTH_MAX_CONNECTION_IDLE_MS = 30_000


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _connection_management(settings: Settings) -> list[tuple[str, int]]:
    options = [
        # Without this, a second server could silently share an occupied port.
        ("grpc.so_reuseport", 0),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        # The server pings idle connections so dead peers (and NAT entries) are noticed.
        ("grpc.keepalive_time_ms", _ms(settings.keepalive_time_seconds)),
        ("grpc.keepalive_timeout_ms", _ms(settings.keepalive_timeout_seconds)),
        # Keepalive enforcement: clients may ping idle connections, but not too often.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
    ]
    if settings.max_connection_age_seconds > 0:
        # A GOAWAY after this age makes clients reconnect, so long-lived HTTP/2
        # connections spread over replicas added behind a Kubernetes Service.
        options += [
            ("grpc.max_connection_age_ms", _ms(settings.max_connection_age_seconds)),
            ("grpc.max_connection_age_grace_ms", _ms(settings.max_connection_age_grace_seconds)),
        ]
    return options


def connection_cap(settings: Settings, descriptor_limit: int) -> int:
    """MAX_CONNECTIONS, or less when the file-descriptor limit leaves no room for it."""
    room = descriptor_limit - RESERVED_DESCRIPTORS - HEALTH_MAX_CONNECTIONS
    return max(16, min(settings.max_connections, room))


def server_options(settings: Settings, *, descriptor_limit: int) -> list[tuple[str, int]]:
    """Message size, stream, connection, keepalive and age options of the API port."""
    return [
        *_connection_management(settings),
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        # Bounds what one connection can hold open, and is what gRPC's defence against
        # HTTP/2 rapid reset (CVE-2023-44487) measures abuse against.
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        ("grpc.max_allowed_incoming_connections", connection_cap(settings, descriptor_limit)),
    ]


def health_server_options(settings: Settings) -> list[tuple[str, int]]:
    """The health-only port: tiny messages, few streams, short-lived connections."""
    return [
        *_connection_management(settings),
        ("grpc.max_receive_message_length", 1024),
        ("grpc.max_concurrent_streams", HEALTH_MAX_STREAMS),
        ("grpc.max_allowed_incoming_connections", HEALTH_MAX_CONNECTIONS),
        ("grpc.max_connection_idle_ms", HEALTH_MAX_CONNECTION_IDLE_MS),
    ]
