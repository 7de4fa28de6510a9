"""The gRPC channel arguments that bound what one client can make the server do."""

from __future__ import annotations

from payments_service.config import Settings

#: The least time a client must leave between keepalive pings. Clients that ping more
#: often get a "too_many_pings" GOAWAY after MAX_PING_STRIKES pings (gRPC's own policy).
MIN_CLIENT_PING_INTERVAL_MS = 10_000
MAX_PING_STRIKES = 2


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Message size, keepalive and connection-age options for ``grpc.server``."""
    options = [
        # Without this, a second server could silently share an occupied port.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
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


def maximum_concurrent_rpcs(settings: Settings) -> int | None:
    """The cap for ``grpc.server(maximum_concurrent_rpcs=...)``; None means no cap."""
    return settings.max_concurrent_rpcs or None
