"""go-grpc-prometheus compatible server metrics.

Every metric lives in a registry owned by one server (no process-wide globals), and the
label children each call touches are bound once per method, so recording a call costs a
few lock-protected additions and no label look-ups.
"""

from __future__ import annotations

import threading

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

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
