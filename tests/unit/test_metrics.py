"""Metric names, labels, code spellings, exemplars and bounded labels (no I/O)."""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from payments_service import __version__
from payments_service.observability.grpc_metrics import GRPC_CODE_NAMES, GrpcServerMetrics
from payments_service.observability.payments import PaymentMetrics
from payments_service.service import PaymentOutcome

METHOD = "/payments.v1.PaymentService/RequestPayment"
LABELS = {
    "grpc_type": "unary",
    "grpc_service": "payments.v1.PaymentService",
    "grpc_method": "RequestPayment",
}


def test_code_names_are_go_grpc_prometheus_spellings() -> None:
    assert len(GRPC_CODE_NAMES) == len(grpc.StatusCode)
    assert GRPC_CODE_NAMES[grpc.StatusCode.INVALID_ARGUMENT] == "InvalidArgument"
    assert GRPC_CODE_NAMES[grpc.StatusCode.CANCELLED] == "Canceled"
    assert GRPC_CODE_NAMES[grpc.StatusCode.DEADLINE_EXCEEDED] == "DeadlineExceeded"


def test_series_for_every_code_exist_before_the_first_call() -> None:
    registry = CollectorRegistry()
    GrpcServerMetrics(registry).for_method(METHOD)
    for name in GRPC_CODE_NAMES.values():
        value = registry.get_sample_value(
            "grpc_server_handled_total", {**LABELS, "grpc_code": name}
        )
        assert value == 0.0, name
    assert registry.get_sample_value("grpc_server_started_total", LABELS) == 0.0


def test_a_call_is_counted_once_with_its_code_and_latency() -> None:
    registry = CollectorRegistry()
    method = GrpcServerMetrics(registry).for_method(METHOD)
    method.started()
    method.handled(grpc.StatusCode.NOT_FOUND, 0.003, None)
    method.started()
    method.handled(grpc.StatusCode.OK, 0.0002, None)

    def value(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, {**LABELS, **extra})

    assert value("grpc_server_handled_total", grpc_code="NotFound") == 1
    assert value("grpc_server_handled_total", grpc_code="OK") == 1
    assert value("grpc_server_started_total") == 2
    assert value("grpc_server_msg_received_total") == 2
    assert value("grpc_server_msg_sent_total") == 1  # no response message for an error
    assert value("grpc_server_handling_seconds_count") == 2
    assert value("grpc_server_handling_seconds_bucket", le="0.0025") == 1
    assert value("grpc_server_handling_seconds_bucket", le="0.005") == 2


def test_exemplars_carry_the_trace_id_in_openmetrics() -> None:
    registry = CollectorRegistry()
    method = GrpcServerMetrics(registry).for_method(METHOD)
    trace_id = format(0x4BF92F3577B34DA6A3CE929D0E0E4736, "032x")
    method.handled(grpc.StatusCode.OK, 0.004, {"trace_id": trace_id})
    families = {
        f.name: f for f in text_string_to_metric_families(generate_openmetrics(registry).decode())
    }
    bucket = next(
        s
        for s in families["grpc_server_handling_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["le"] == "0.005"
    )
    assert bucket.exemplar is not None
    assert bucket.exemplar.labels == {"trace_id": trace_id}
    handled = next(
        s
        for s in families["grpc_server_handled"].samples
        if s.labels.get("grpc_code") == "OK" and s.name.endswith("_total")
    )
    assert handled.exemplar is not None
    assert handled.exemplar.labels == {"trace_id": trace_id}
    # The classic text format has no exemplars (Prometheus must ask for OpenMetrics).
    assert trace_id not in generate_latest(registry).decode()


async def test_payment_metrics_have_bounded_labels_and_read_the_store() -> None:
    registry = CollectorRegistry()

    async def stored() -> int:
        return 3

    metrics = PaymentMetrics(registry, ("EUR", "USD"), stored)
    metrics.record(PaymentOutcome.CREATED, "EUR", 1250)
    metrics.record(PaymentOutcome.REPLAYED, "EUR", 1250)
    metrics.record(PaymentOutcome.INVALID, "other", 5)
    await metrics.refresh()
    assert (
        registry.get_sample_value("payments_total", {"outcome": "created", "currency": "EUR"}) == 1
    )
    assert (
        registry.get_sample_value("payments_total", {"outcome": "conflict", "currency": "USD"}) == 0
    )
    assert (
        registry.get_sample_value("payments_total", {"outcome": "invalid", "currency": "other"})
        == 1
    )
    assert registry.get_sample_value("payments_amount_minor_total", {"currency": "EUR"}) == 1250
    assert registry.get_sample_value("payments_stored") == 3
    assert (
        registry.get_sample_value(
            "payments_service_build_info",
            {"version": __version__},
        )
        == 1
    )


async def test_a_store_that_cannot_count_does_not_break_the_scrape() -> None:
    registry = CollectorRegistry()

    async def broken() -> int:
        raise ConnectionError("database down")

    await PaymentMetrics(registry, ("EUR",), broken).refresh()
    text = generate_latest(registry).decode()
    assert "payments_stored NaN" in text
