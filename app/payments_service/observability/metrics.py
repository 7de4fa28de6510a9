"""Prometheus metrics: go-grpc-prometheus compatible server metrics and business metrics.

Every metric lives in a registry owned by one server (no process-wide globals), and the
label children each call touches are bound once per method, so recording a call costs a
few lock-protected additions and no label look-ups.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

from payments_service import __version__
from payments_service.domain.errors import StoreUnavailableError

logger = logging.getLogger(__name__)

#: grpc.StatusCode -> the spelling go-grpc-prometheus dashboards and alerts expect.
GRPC_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}

#: Latency buckets (seconds): Prometheus' defaults plus finer ones below 5 ms.
HANDLING_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

#: Exemplar labels: {"trace_id": "<32 hex digits>"}, or None for an unsampled call.
Exemplar = dict[str, str] | None


class MethodMetrics:
    """The series of one unary method, bound once; :meth:`record` is the per-call path."""

    def __init__(self, metrics: GrpcServerMetrics, service: str, method: str) -> None:
        labels = ("unary", service, method)
        self._started = metrics.started.labels(*labels)
        self._received = metrics.msg_received.labels(*labels)
        self._sent = metrics.msg_sent.labels(*labels)
        self._seconds = metrics.handling_seconds.labels(*labels)
        self._handled = {
            code: metrics.handled.labels(*labels, name) for code, name in GRPC_CODE_NAMES.items()
        }

    def started(self) -> None:
        """A call arrived (counted before the handler runs)."""
        self._started.inc()

    def received(self) -> None:
        """The request message was decoded."""
        self._received.inc()

    def handled(self, code: grpc.StatusCode, seconds: float, exemplar: Exemplar) -> None:
        """The call ended with ``code`` after ``seconds``."""
        if code is grpc.StatusCode.OK:
            self._sent.inc()
        self._handled[code].inc(1, exemplar)
        self._seconds.observe(seconds, exemplar)


class GrpcServerMetrics:
    """The go-grpc-prometheus server metrics, with the same names, labels and code names."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            _GRPC_LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_GRPC_LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            _GRPC_LABELS,
            buckets=HANDLING_SECONDS_BUCKETS,
            registry=registry,
        )
        self.msg_received = Counter(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            _GRPC_LABELS,
            registry=registry,
        )
        self.msg_sent = Counter(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            _GRPC_LABELS,
            registry=registry,
        )
        self._methods: dict[str, MethodMetrics] = {}
        self._lock = threading.Lock()

    def for_method(self, full_method: str) -> MethodMetrics:
        """The bound series of ``/package.Service/Method`` (created, for every code, once)."""
        found = self._methods.get(full_method)
        if found is not None:
            return found
        with self._lock:
            found = self._methods.get(full_method)
            if found is None:
                service, _, method = full_method.lstrip("/").rpartition("/")
                found = MethodMetrics(self, service, method)
                self._methods[full_method] = found
            return found


#: outcome label values of payments_total.
PAYMENT_OUTCOMES = ("created", "replayed", "conflict", "invalid")
#: The currency label of a request whose currency is not a supported one (keeps it bounded).
OTHER_CURRENCY = "other"


class PaymentMetrics:
    """Business metrics: payments by outcome and currency, amounts, payments stored."""

    def __init__(
        self,
        registry: CollectorRegistry,
        currencies: tuple[str, ...],
        stored_count: Callable[[], int],
    ) -> None:
        self.payments = Counter(
            "payments",
            "RequestPayment calls by outcome (created, replayed, conflict, invalid) and currency.",
            ("outcome", "currency"),
            registry=registry,
        )
        self.amount = Counter(
            "payments_amount_minor",
            "Sum of the amounts of created payments, in minor units of the currency.",
            ("currency",),
            registry=registry,
        )
        stored = Gauge(
            "payments_stored",
            "Payments in the store, read at each scrape (PostgreSQL: exact up to 100,000, "
            "then its estimate; the store is shared, so aggregate replicas with max).",
            registry=registry,
        )
        stored.set_function(_safe_count(stored_count))
        build = Info("payments_service_build", "Version of the running service.", registry=registry)
        build.info({"version": __version__})
        for currency in currencies:
            self.amount.labels(currency)
            for outcome in PAYMENT_OUTCOMES:
                self.payments.labels(outcome, currency)

    def record(self, outcome: str, currency: str, amount_minor: int) -> None:
        """Count one RequestPayment outcome (and its amount when a payment was created).

        ``currency`` must be a supported currency or :data:`OTHER_CURRENCY`.
        """
        self.payments.labels(outcome, currency).inc()
        if outcome == "created":
            self.amount.labels(currency).inc(amount_minor)


def _safe_count(count: Callable[[], int]) -> Callable[[], float]:
    def read() -> float:
        try:
            return float(count())
        except StoreUnavailableError:  # the outage is logged by the readiness monitor
            return math.nan
        except Exception:  # a scrape must not fail because the store misbehaves
            logger.warning("Cannot count stored payments", exc_info=True)
            return math.nan

    return read


class MetricsEndpoint:
    """The /metrics HTTP server (OpenMetrics when the scraper asks for it, which exemplars need)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._host = host.strip("[]")
        self._port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started, else the configured one."""
        return self._server.server_port if self._server is not None else self._port

    def start(self) -> None:
        """Serve /metrics on a daemon thread. Raises OSError when the port is taken."""
        self._server, self._thread = start_http_server(
            self._port, addr=self._host, registry=self._registry
        )
        logger.info("Serving Prometheus metrics on port %d at /metrics", self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
