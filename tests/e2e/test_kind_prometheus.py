"""The kind Prometheus (k8s/observability/prometheus.yaml) against the rendered pod, with a real
Prometheus scraping a real server: its relabelling honours the chart's prometheus.io/*
annotations, and the query kind-smoke runs finds the release's series.

Debian's Prometheus is built without Kubernetes discovery, so the one substitution is the
discovery itself: the target is given with the labels Kubernetes pod discovery would attach to
the pod (its annotations and labels as __meta_kubernetes_pod_* labels, address podIP:port of
its first container port). Everything else is the kind configuration as shipped.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from payments_service import payments_pb2_grpc
from tests.support.chart import NAMESPACE, RELEASE, manifests, render, single_object
from tests.support.environment import ROOT, require_tool
from tests.support.kind_prometheus import POD_NAME, discovered_target, kind_prometheus_config
from tests.support.network import free_port, wait_for_port
from tests.support.processes import start_server_process
from tests.support.requests import valid_request

pytestmark = pytest.mark.tools


def smoke_query() -> str:
    """The PromQL that kind-smoke runs, with its variables filled in."""
    script = (ROOT / "k8s" / "kind" / "smoke.sh").read_text()
    (query,) = re.findall(r'^query="(.*)"$', script, flags=re.MULTILINE)
    query = str(query).replace('\\"', '"').replace("$namespace", NAMESPACE)
    return query.replace("$release", RELEASE)


def query(base: str, expr: str) -> list[dict[str, Any]]:
    """The result of an instant query; empty while Prometheus is still starting (503)."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            result: list[dict[str, Any]] = json.load(response)["data"]["result"]
    except urllib.error.HTTPError as error:
        if error.code != 503:
            raise
        error.close()
        return []
    return result


def test_kind_prometheus_scrapes_the_pod_through_its_annotations(tmp_path: Path) -> None:
    binary = require_tool("prometheus")
    grpc_port, metrics_port, web_port = free_port(), free_port(), free_port()
    objects = manifests(render({"ports": {"grpc": grpc_port, "metrics": metrics_port}}))
    pod = single_object(objects, "Deployment")["spec"]["template"]
    address, labels = discovered_target(pod)
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(kind_prometheus_config(address, labels)))

    server = start_server_process(
        {"PORT": str(grpc_port), "METRICS_PORT": str(metrics_port), "OTEL_SDK_DISABLED": "true"}
    )
    command = [binary, f"--config.file={config_file}", f"--storage.tsdb.path={tmp_path / 'data'}"]
    prometheus = subprocess.Popen(
        [*command, f"--web.listen-address=127.0.0.1:{web_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{web_port}"
    try:
        wait_for_port(grpc_port, timeout=30)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:  # as kind-smoke does
            payments_pb2_grpc.PaymentServiceStub(channel).RequestPayment(
                valid_request("smoke-0001", currency="USD", order_id="o-1"),
                timeout=10,
            )
        wait_for_port(web_port, timeout=30)
        deadline = time.monotonic() + 60
        found: list[dict[str, Any]] = []
        while not found and time.monotonic() < deadline:
            found = [r for r in query(base, smoke_query()) if float(r["value"][1]) > 0]
            time.sleep(0.5)
        assert found, "kind-smoke's query found no series of the release"
        (up,) = query(base, f'up{{namespace="{NAMESPACE}"}}')
        # The address was rewritten from the gRPC port to prometheus.io/port.
        assert up["metric"]["instance"] == f"127.0.0.1:{metrics_port}"
        assert up["metric"]["pod"] == POD_NAME
        assert up["value"][1] == "1"
        assert up["metric"]["app_kubernetes_io_name"] == "payments-service"
        # The job is the app name label (what the dashboard's job variable lists).
        assert up["metric"]["job"] == "payments-service"
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        server.terminate()
        server.communicate(timeout=30)
