"""The real process: telemetry wired from the environment, spans flushed at SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import grpc

from payments_service import payments_pb2_grpc
from tests.support.environment import ROOT
from tests.support.network import free_port, wait_for_port
from tests.support.otlp_receiver import running_receiver
from tests.support.processes import start_server_process
from tests.support.requests import valid_request

SERVICE = "payments.v1.PaymentService"


def test_process_exports_spans_serves_metrics_and_logs_json_with_trace_ids() -> None:
    port, metrics_port = free_port(), free_port()
    with running_receiver() as (receiver, receiver_port):
        process = start_server_process(
            {
                "PORT": str(port),
                "HOST": "127.0.0.1",
                "METRICS_PORT": str(metrics_port),
                "LOG_FORMAT": "json",
                # Every call is slower than 0 s: the successful one gets its line at INFO too.
                "SLOW_CALL_SECONDS": "0",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
                "OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=shop",
                # Longer than the test: only the flush at shutdown can deliver the spans.
                "OTEL_BSP_SCHEDULE_DELAY": "60000",
            }
        )
        try:
            wait_for_port(port)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                payments_pb2_grpc.PaymentServiceStub(channel).RequestPayment(
                    valid_request("proc-key-1", amount_minor=500, currency="JPY", order_id="o-9")
                )
            with urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=10
            ) as response:
                exposition = response.read().decode()
            assert receiver.spans() == []  # nothing exported yet: the batch waits
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        spans = receiver.spans()
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="RequestPayment",'
        f'grpc_service="{SERVICE}",grpc_type="unary"}} 1.0'
    ) in exposition
    assert [span.name for span in spans] == [f"{SERVICE}/RequestPayment"]
    assert spans[0].resource["k8s.namespace.name"] == "shop"
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(lines) == len(output.splitlines()), output  # every line is JSON
    access = [line for line in lines if line["logger"] == "payments_service.access"]
    assert len(access) == 1
    server_span = next(s for s in spans if s.name.startswith(SERVICE))
    assert access[0]["trace_id"] == server_span.trace_id
    assert access[0]["grpc_code"] == "OK"


def test_unknown_sampler_stops_the_process_with_exit_2_and_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "payments_service"],
        env={"PATH": "/usr/bin:/bin", "OTEL_TRACES_SAMPLER": "always_maybe"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "OTEL_TRACES_SAMPLER='always_maybe'" in result.stderr


#: What the shutdown may spend on spans after the calls are done (docs/deployment.md): the
#: chart's termination period counts on it.
SPAN_SHUTDOWN_BOUND_SECONDS = 4.0


def test_sigterm_with_an_unreachable_collector_exits_within_the_bound() -> None:
    """The SDK's own flush would retry a dead collector for 10 s and more (a SIGKILL on
    Kubernetes); spans that cannot leave within the bound are dropped instead."""
    port = free_port()
    process = start_server_process(
        {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nobody there
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # the first export fails, and retries, at once
        }
    )
    try:
        wait_for_port(port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = payments_pb2_grpc.PaymentServiceStub(channel)
            for i in range(20):
                stub.RequestPayment(valid_request(f"k-{i:08}"))
        time.sleep(1.5)  # the exporter is now between retries
    finally:
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    took = time.monotonic() - sent
    assert process.returncode == 0, output
    assert took < SPAN_SHUTDOWN_BOUND_SECONDS, (took, output[-2000:])
    assert "Spans not exported within" in output
