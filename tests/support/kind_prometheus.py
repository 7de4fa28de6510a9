"""The kind Prometheus configuration (k8s/observability/prometheus.yaml) run outside a
cluster: the target Kubernetes pod discovery would give it, given statically."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support.chart import NAMESPACE
from tests.support.environment import ROOT

POD_NAME = "payments-service-7d9c8b6f5-x2k4q"


def meta_name(name: str) -> str:
    """How Kubernetes discovery turns a label or annotation name into a label name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def discovered_target(pod: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The address and labels Kubernetes pod discovery gives Prometheus for ``pod``."""
    (container,) = pod["spec"]["containers"]
    labels = {
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": POD_NAME,
    }
    for key, value in pod["metadata"]["annotations"].items():
        labels[f"__meta_kubernetes_pod_annotation_{meta_name(key)}"] = value
    for key, value in pod["metadata"]["labels"].items():
        labels[f"__meta_kubernetes_pod_label_{meta_name(key)}"] = value
    return f"127.0.0.1:{container['ports'][0]['containerPort']}", labels


def kind_prometheus_config(address: str, labels: dict[str, str]) -> dict[str, Any]:
    stack = yaml.safe_load_all((ROOT / "k8s" / "observability" / "prometheus.yaml").read_text())
    (configmap,) = [
        o for o in stack if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "prometheus"
    ]
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["prometheus.yml"])
    config["global"]["scrape_interval"] = "1s"  # faster than kind's 10 s, for the test
    config.pop("rule_files")
    (job,) = config["scrape_configs"]
    del job["kubernetes_sd_configs"]
    job["static_configs"] = [{"targets": [address], "labels": labels}]
    return config
