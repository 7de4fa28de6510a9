"""What telemetry says of the database: a CLIENT span per statement, and the connection
pool's gauges and counters, read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: psycopg_pool statistic -> (metric name, help[, unit scale]). The counters only grow.
_GAUGES = {
    "pool_size": ("payments_db_pool_connections", "Connections open or being opened."),
    "pool_available": ("payments_db_pool_idle_connections", "Connections idle in the pool."),
    "requests_waiting": ("payments_db_pool_waiting_requests", "Requests waiting for a connection."),
    "pool_min": ("payments_db_pool_min_connections", "DATABASE_POOL_MIN_SIZE."),
    "pool_max": ("payments_db_pool_max_connections", "DATABASE_POOL_MAX_SIZE."),
}
_COUNTERS = {
    "requests_num": ("payments_db_pool_requests", "Connections requested from the pool.", 1.0),
    "requests_queued": (
        "payments_db_pool_queued_requests",
        "Requests that had to wait for a connection.",
        1.0,
    ),
    "requests_wait_ms": (
        "payments_db_pool_wait_seconds",
        "Time spent waiting for a connection.",
        0.001,
    ),
    "requests_errors": (
        "payments_db_pool_request_errors",
        "Requests that got no connection (timeout or queue full).",
        1.0,
    ),
    "connections_num": ("payments_db_pool_connects", "Connection attempts to the database.", 1.0),
    "connections_errors": (
        "payments_db_pool_connect_errors",
        "Failed connection attempts to the database.",
        1.0,
    ),
    "connections_lost": (
        "payments_db_pool_connections_lost",
        "Connections found broken and replaced.",
        1.0,
    ),
}


class PoolMetricsCollector(Collector):
    """Exposes ``stats()`` (psycopg_pool's ``get_stats()``) on each scrape.

    Register it with the server's registry: ``registry.register(PoolMetricsCollector(...))``.
    """

    def __init__(self, stats: Callable[[], Mapping[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for key, (name, documentation) in _GAUGES.items():
            gauge = GaugeMetricFamily(name, documentation)
            gauge.add_metric([], float(stats.get(key, 0)))
            yield gauge
        for key, (name, documentation, scale) in _COUNTERS.items():
            counter = CounterMetricFamily(name, documentation)
            counter.add_metric([], stats.get(key, 0) * scale)
            yield counter

    def describe(self) -> Iterator[Metric]:
        # Describing without reading the pool lets registration happen before it opens.
        for name, documentation in _GAUGES.values():
            yield GaugeMetricFamily(name, documentation)
        for name, documentation, _scale in _COUNTERS.values():
            yield CounterMetricFamily(name, documentation)


class _Batch:
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def batch(self, size: int) -> None:
        self._span.set_attribute("db.operation.batch.size", size)


class StatementSpans:
    """The store's :class:`~payments_service.storage.postgres.StatementObserver`: a CLIENT
    span with the db.* semantic-convention attributes per statement, under the call's span
    (the current one). The statement's text is recorded, never its values."""

    def __init__(
        self, provider: trace.TracerProvider | None, database: str, host: str, port: int
    ) -> None:
        self._tracer = trace.get_tracer("payments_service.storage", tracer_provider=provider)
        self._attributes: dict[str, str | int] = {
            "db.system": "postgresql",
            "db.system.name": "postgresql",
            "db.namespace": database,
            "server.address": host,
            "server.port": port,
            "db.collection.name": "payments",
        }

    @contextmanager
    def statement(self, operation: str, text: str) -> Iterator[_Batch]:
        with self._tracer.start_as_current_span(
            f"{operation} payments",
            kind=trace.SpanKind.CLIENT,
            attributes={
                **self._attributes,
                "db.operation.name": operation,
                "db.query.text": text.strip(),
            },
        ) as span:
            yield _Batch(span)
