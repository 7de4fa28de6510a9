"""Everything observability one server needs, built from Settings and shut down with it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from payments_service.config import ListenError, Settings
from payments_service.observability.calls import CallTelemetry
from payments_service.observability.database import PoolMetricsCollector, StatementSpans
from payments_service.observability.grpc_metrics import GrpcServerMetrics
from payments_service.observability.metrics_endpoint import MetricsEndpoint
from payments_service.observability.payments import PaymentMetrics, PaymentTelemetry
from payments_service.observability.tracing import (
    ServerSpans,
    build_propagator,
    build_tracing,
    shut_down_tracing,
)

logger = logging.getLogger(__name__)


class Telemetry:
    """Traces (unless OTEL_SDK_DISABLED) and metrics (unless METRICS_PORT=0) of one server."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.tracing = build_tracing(settings)
        self.registry: CollectorRegistry | None = None
        self.grpc_metrics: GrpcServerMetrics | None = None
        self.endpoint: MetricsEndpoint | None = None
        self._payment_metrics: PaymentMetrics | None = None
        if settings.metrics_port:
            self.registry = CollectorRegistry()
            self.grpc_metrics = GrpcServerMetrics(self.registry)
        else:
            logger.info("Metrics disabled (METRICS_PORT=0)")
        spans = (
            ServerSpans(self.tracing, build_propagator(settings))
            if self.tracing is not None
            else None
        )
        #: What the call guard tells about each call (span, metrics, access log).
        self.calls = CallTelemetry(self.grpc_metrics, spans, settings.slow_call_seconds)

    @property
    def tracer_provider(self) -> TracerProvider | None:
        """The SDK's provider (the store's query spans), None without tracing."""
        return self.tracing.provider if self.tracing is not None else None

    def prepare_methods(self, full_methods: list[str]) -> None:
        """Create every series of these methods now, so dashboards see zeros from start-up."""
        if self.grpc_metrics is not None:
            for method in full_methods:
                self.grpc_metrics.for_method(method)

    def payment_observer(
        self, currencies: tuple[str, ...], stored_count: Callable[[], Awaitable[int]]
    ) -> PaymentTelemetry:
        """Payment outcomes on the server span and in the metrics."""
        if self.registry is not None:
            self._payment_metrics = PaymentMetrics(self.registry, currencies, stored_count)
        return PaymentTelemetry(
            self._payment_metrics, currencies, traced=self.tracer_provider is not None
        )

    def statement_spans(self, database: Any) -> StatementSpans | None:
        """Spans for a PostgreSQL store's statements (``database``: its DatabaseAddress)."""
        if self.tracer_provider is None:
            return None
        return StatementSpans(self.tracer_provider, database.name, database.host, database.port)

    def watch_pool(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Add a database connection pool's gauges to /metrics."""
        if self.registry is not None:
            self.registry.register(PoolMetricsCollector(stats))

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on (None when metrics are off)."""
        return self.endpoint.port if self.endpoint is not None else None

    async def start(self) -> None:
        """Start serving /metrics. Raises ListenError when METRICS_PORT is taken."""
        if self.registry is None:
            return
        refresh = self._payment_metrics.refresh if self._payment_metrics is not None else None
        host, port = self._settings.metrics_bind_host, self._settings.metrics_port
        self.endpoint = MetricsEndpoint(self.registry, host, port, refresh=refresh)
        try:
            await self.endpoint.start()
        except OSError:
            self.endpoint = None
            raise ListenError.for_port("METRICS_PORT", host, port) from None

    async def shutdown(self) -> None:
        """Flush spans still buffered (after the gRPC server stopped) and stop /metrics."""
        if self.tracer_provider is not None:
            await shut_down_tracing(self.tracer_provider)
        if self.endpoint is not None:
            await self.endpoint.stop()
