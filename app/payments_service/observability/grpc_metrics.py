"""go-grpc-prometheus compatible server metrics.

Every metric lives in a registry owned by one server (no process-wide globals). A call only
adds to plain numbers bound once per method: the server changes them on its event loop
alone, so no lock is needed, and the collector turns them into the exposition at scrape
time. No ``*_created`` series: go-grpc-prometheus has none and no dashboard reads them.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar as PromExemplar
from prometheus_client.utils import floatToGoString

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
_BUCKET_NAMES = [*map(floatToGoString, HANDLING_SECONDS_BUCKETS), "+Inf"]

_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

_OK = grpc.StatusCode.OK

#: Exemplar labels: {"trace_id": "<32 hex digits>"}, or None for an unsampled call.
Exemplar = dict[str, str] | None


class MethodMetrics:
    """The series of one unary method; the three methods below are the per-call path."""

    __slots__ = (
        "bucket_counts",
        "bucket_exemplars",
        "handled_counts",
        "handled_exemplars",
        "labels",
        "received_count",
        "seconds_sum",
        "sent_count",
        "started_count",
    )

    def __init__(self, service: str, method: str) -> None:
        self.labels = ("unary", service, method)
        self.started_count = 0
        self.received_count = 0
        self.sent_count = 0
        #: Calls that ended with each code but OK: an OK unary call sent its one response,
        #: so ``sent_count`` counts those (a StatusCode's hash is a Python call).
        self.handled_counts = dict.fromkeys(GRPC_CODE_NAMES.keys() - {_OK}, 0)
        self.handled_exemplars: dict[grpc.StatusCode, PromExemplar] = {}
        #: Calls per bucket, not cumulative (the collector adds them up).
        self.bucket_counts = [0] * len(_BUCKET_NAMES)
        self.bucket_exemplars: list[PromExemplar | None] = [None] * len(_BUCKET_NAMES)
        self.seconds_sum = 0.0

    def started(self) -> None:
        """A call's request arrived and its handler is about to run: for a unary call,
        started and its one message received are the same moment."""
        self.started_count += 1
        self.received_count += 1

    def handled(self, code: grpc.StatusCode, seconds: float, exemplar: Exemplar) -> None:
        """The call ended with ``code`` after ``seconds``."""
        if code is _OK:
            self.sent_count += 1
        else:
            self.handled_counts[code] += 1
        bucket = bisect_left(HANDLING_SECONDS_BUCKETS, seconds)  # the first bound >= seconds
        self.bucket_counts[bucket] += 1
        self.seconds_sum += seconds
        if exemplar is not None:
            now = time.time()
            self.handled_exemplars[code] = PromExemplar(exemplar, 1.0, now)
            self.bucket_exemplars[bucket] = PromExemplar(exemplar, seconds, now)


class GrpcServerMetrics(Collector):
    """The go-grpc-prometheus server metrics, with the same names, labels and code names."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._methods: dict[str, MethodMetrics] = {}
        registry.register(self)

    def for_method(self, full_method: str) -> MethodMetrics:
        """The series of ``/package.Service/Method`` (created, for every code, once)."""
        found = self._methods.get(full_method)
        if found is None:
            service, _, method = full_method.lstrip("/").rpartition("/")
            found = self._methods[full_method] = MethodMetrics(service, method)
        return found

    def describe(self) -> Iterator[Metric]:
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        return self._families(list(self._methods.values()))

    @staticmethod
    def _families(methods: list[MethodMetrics]) -> Iterator[Metric]:
        started = CounterMetricFamily(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            labels=_GRPC_LABELS,
        )
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=(*_GRPC_LABELS, "grpc_code"),
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            labels=_GRPC_LABELS,
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            labels=_GRPC_LABELS,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            labels=_GRPC_LABELS,
        )
        for m in methods:
            started.add_metric(m.labels, m.started_count)
            received.add_metric(m.labels, m.received_count)
            sent.add_metric(m.labels, m.sent_count)
            for code, name in GRPC_CODE_NAMES.items():
                handled.add_metric(
                    (*m.labels, name),
                    m.sent_count if code is _OK else m.handled_counts[code],
                    exemplar=m.handled_exemplars.get(code),
                )
            cumulative = 0
            buckets: list[tuple[str, float, PromExemplar] | tuple[str, float]] = []
            for name, count, exemplar in zip(
                _BUCKET_NAMES, m.bucket_counts, m.bucket_exemplars, strict=True
            ):
                cumulative += count
                buckets.append(
                    (name, cumulative) if exemplar is None else (name, cumulative, exemplar)
                )
            seconds.add_metric(m.labels, buckets, m.seconds_sum)
        yield from (started, handled, seconds, received, sent)
