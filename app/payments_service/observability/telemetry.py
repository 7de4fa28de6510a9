"""Everything observability one server needs, built from Settings and shut down with it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from prometheus_client import CollectorRegistry

from payments_service.config import Settings
from payments_service.observability.metrics import (
    GrpcServerMetrics,
    MetricsEndpoint,
    PaymentMetrics,
)
from payments_service.observability.payments import PaymentTelemetry
from payments_service.observability.tracing import (
    build_tracer_provider,
    tracing_interceptor,
)
from payments_service.transport.interceptor import CallInterceptor

logger = logging.getLogger(__name__)


class Telemetry:
    """Traces (unless OTEL_SDK_DISABLED) and metrics (unless METRICS_PORT=0) of one server."""

    def __init__(self, settings: Settings) -> None:
        self.tracer_provider = build_tracer_provider(settings)
        self.registry: CollectorRegistry | None = None
        self.grpc_metrics: GrpcServerMetrics | None = None
        self.endpoint: MetricsEndpoint | None = None
        if settings.metrics_port:
            self.registry = CollectorRegistry()
            self.grpc_metrics = GrpcServerMetrics(self.registry)
            self.endpoint = MetricsEndpoint(self.registry, settings.host, settings.metrics_port)
        else:
            logger.info("Metrics disabled (METRICS_PORT=0)")

    def interceptors(self) -> list[grpc.ServerInterceptor]:  # type: ignore[type-arg]
        """The outermost interceptors, outermost first: server span, then the call recorder."""
        chain: list[grpc.ServerInterceptor] = []  # type: ignore[type-arg]
        if self.tracer_provider is not None:
            chain.append(tracing_interceptor(self.tracer_provider))
        chain.append(CallInterceptor(self.grpc_metrics))
        return chain

    def prepare_methods(self, full_methods: list[str]) -> None:
        """Create every series of these methods now, so dashboards see zeros from start-up."""
        if self.grpc_metrics is not None:
            for method in full_methods:
                self.grpc_metrics.for_method(method)

    def payment_observer(
        self, currencies: tuple[str, ...], stored_count: Callable[[], int]
    ) -> PaymentTelemetry:
        """Payment outcomes on the server span and in the metrics."""
        metrics = (
            PaymentMetrics(self.registry, currencies, stored_count)
            if self.registry is not None
            else None
        )
        return PaymentTelemetry(metrics, currencies)

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on (None when metrics are off)."""
        return self.endpoint.port if self.endpoint is not None else None

    def start(self) -> None:
        """Start serving /metrics. Raises OSError when METRICS_PORT is taken."""
        if self.endpoint is not None:
            self.endpoint.start()

    def shutdown(self) -> None:
        """Flush spans still buffered (after the gRPC server stopped) and stop /metrics."""
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush()
            self.tracer_provider.shutdown()
        if self.endpoint is not None:
            self.endpoint.stop()
