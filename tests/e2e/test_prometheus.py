"""A real Prometheus scrapes a real server; exemplars lead to spans a real OTLP receiver got.

One module-scoped stack: an OTLP/gRPC receiver, the server (traces exported to the
receiver, /metrics on a free port), a known mix of calls, and Prometheus (Debian package)
started on a free port with exemplar storage, scraping every second and loading the alert
rules. Each test checks one promise against Prometheus' HTTP API.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments_service import payments_pb2, payments_pb2_grpc
from tests.support.environment import ROOT, require_tool
from tests.support.network import free_port, wait_for_port
from tests.support.otlp_receiver import TraceReceiver, running_receiver
from tests.support.requests import valid_request
from tests.support.servers import make_settings, running_server

pytestmark = pytest.mark.tools

FILES = ROOT / "helm" / "payments-service" / "files"
SERVICE = "payments.v1.PaymentService"

#: (method, code) -> calls made; everything else must be zero.
EXPECTED_HANDLED = {
    (SERVICE, "RequestPayment", "OK"): 4,  # 3 created + 1 replayed
    (SERVICE, "RequestPayment", "InvalidArgument"): 2,
    (SERVICE, "RequestPayment", "FailedPrecondition"): 1,
    (SERVICE, "GetPayment", "OK"): 2,
    (SERVICE, "GetPayment", "NotFound"): 1,
    ("grpc.health.v1.Health", "Check", "OK"): 1,
}


@dataclass
class Stack:
    prometheus: str  # base URL
    metrics_url: str
    receiver: TraceReceiver
    promtool: str

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result


def _make_calls(port: int) -> None:
    def request(key: str, amount: int = 1000) -> payments_pb2.RequestPaymentRequest:
        return valid_request(key, amount_minor=amount, currency="USD", order_id="o-1")

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        created = [stub.RequestPayment(request(f"prom-key-{i:04d}")) for i in range(3)]
        stub.RequestPayment(request("prom-key-0000"))  # replayed
        for bad in (request("short"), request("prom-key-bad1", amount=0)):
            with pytest.raises(grpc.RpcError):
                stub.RequestPayment(bad)
        with pytest.raises(grpc.RpcError):
            stub.RequestPayment(request("prom-key-0001", amount=5))  # key reused: conflict
        for payment in created[:2]:
            stub.GetPayment(payments_pb2.GetPaymentRequest(payment_id=payment.payment_id))
        with pytest.raises(grpc.RpcError):
            stub.GetPayment(
                payments_pb2.GetPaymentRequest(payment_id="550e8400-e29b-41d4-a716-446655440000")
            )
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())


def _start_prometheus(
    binary: str, workdir: Path, target_port: int
) -> tuple[subprocess.Popen[bytes], int]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(FILES / "alerts.yaml")],
        "scrape_configs": [
            {
                "job_name": "payments-service",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return process, port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_tool("prometheus")
    promtool = require_tool("promtool")
    workdir = tmp_path_factory.mktemp("prometheus")
    with running_receiver() as (receiver, receiver_port):
        settings = make_settings(
            metrics_port=free_port(),
            otel_exporter_otlp_endpoint=f"http://127.0.0.1:{receiver_port}",
        )
        with running_server(settings) as app:
            tracer_provider = app.app.telemetry.tracer_provider
            assert tracer_provider is not None
            process, port = _start_prometheus(prometheus, workdir, settings.metrics_port)
            try:
                wait_for_port(port, timeout=30)
                result = Stack(
                    prometheus=f"http://127.0.0.1:{port}",
                    metrics_url=f"http://127.0.0.1:{settings.metrics_port}/metrics",
                    receiver=receiver,
                    promtool=promtool,
                )
                _wait_for_scrape(result, 0)  # a first scrape before the calls: rates see them
                _make_calls(app.port)
                tracer_provider.force_flush()
                _wait_for_scrape(result, sum(EXPECTED_HANDLED.values()))
                yield result
            finally:
                process.terminate()
                process.wait(timeout=30)


def _wait_for_scrape(stack: Stack, total: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    expr = "sum(grpc_server_handled_total)"
    while True:
        try:
            result = stack.query(expr)
            if result and float(result[0]["value"][1]) == total:
                return
        except OSError:
            pass  # Prometheus still starting
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus never saw {total} handled calls")
        time.sleep(0.25)


def test_prometheus_counts_every_call_once_per_method_and_code(stack: Stack) -> None:
    series = stack.query('grpc_server_handled_total{job="payments-service"}')
    seen = {
        (s["metric"]["grpc_service"], s["metric"]["grpc_method"], s["metric"]["grpc_code"]): int(
            float(s["value"][1])
        )
        for s in series
    }
    nonzero = {key: value for key, value in seen.items() if value}
    assert nonzero == EXPECTED_HANDLED
    # Series for every PaymentService method and code exist from start-up (zeros included).
    assert seen[(SERVICE, "Health", "OK")] == 0
    assert seen[(SERVICE, "GetPayment", "Internal")] == 0
    assert {s["metric"]["grpc_type"] for s in series} == {"unary"}


def test_business_metrics_are_scraped(stack: Stack) -> None:
    def value(expr: str) -> float:
        return float(stack.query(expr)[0]["value"][1])

    assert value('payments_total{outcome="created",currency="USD"}') == 3
    assert value('payments_total{outcome="replayed",currency="USD"}') == 1
    assert value('payments_total{outcome="conflict",currency="USD"}') == 1
    assert value('sum(payments_total{outcome="invalid"})') == 2
    assert value('payments_amount_minor_total{currency="USD"}') == 3000
    assert value("payments_stored") == 3
    assert stack.query("payments_service_build_info")[0]["metric"]["version"]


def test_exemplars_carry_trace_ids_of_exported_spans(stack: Stack) -> None:
    now = time.time()
    data = stack.api(
        "query_exemplars",
        query=f'grpc_server_handling_seconds_bucket{{grpc_service="{SERVICE}"}}',
        start=str(now - 600),
        end=str(now + 60),
    )
    trace_ids = {e["labels"]["trace_id"] for series in data for e in series["exemplars"]}
    assert trace_ids, data
    received = {span.trace_id for span in stack.receiver.spans()}
    assert trace_ids <= received
    assert all(re.fullmatch("[0-9a-f]{32}", t) for t in trace_ids)


def test_promtool_finds_nothing_wrong_with_the_exposition(stack: Stack) -> None:
    with urllib.request.urlopen(stack.metrics_url, timeout=10) as response:  # noqa: S310
        exposition = response.read()
    result = subprocess.run(
        [stack.promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""


def test_openmetrics_is_served_when_asked_for(stack: Stack) -> None:
    request = urllib.request.Request(  # noqa: S310 (loopback http)
        stack.metrics_url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        body = response.read().decode()
    assert body.rstrip().endswith("# EOF")
    assert '# {trace_id="' in body


def _rule_expressions() -> list[str]:
    rules = yaml.safe_load((FILES / "alerts.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((FILES / "dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_alert_and_dashboard_expression_evaluates(stack: Stack) -> None:
    expressions = _rule_expressions() + _dashboard_expressions()
    assert len(expressions) >= 12
    for expr in expressions:
        # Grafana's variables, as Grafana would substitute them.
        concrete = expr.replace("$__rate_interval", "1m").replace("$job", ".*")
        concrete = concrete.replace("$namespace", ".*")
        assert "$" not in concrete, expr
        stack.query(concrete)  # raises unless Prometheus answers "success"
    # The dashboard's rate queries see the traffic (not just parse).
    rate = stack.query(
        'sum(rate(grpc_server_handled_total{grpc_service="payments.v1.PaymentService"}[1m]))'
    )
    assert float(rate[0]["value"][1]) > 0
