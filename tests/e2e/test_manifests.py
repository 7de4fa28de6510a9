"""k8s/: the plain manifests (no drift from the chart), the kind stack, the dev PostgreSQL,
the kind scripts, and checkov over everything the chart and k8s/ deploy."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, require_tool
from tests.e2e.chart_support import (
    CHART,
    KIND_VALUES,
    NAMESPACE,
    SCENARIOS,
    assert_tool_passes,
    load_values,
    manifests,
    plain_manifests,
    render,
)

pytestmark = pytest.mark.tools

K8S = ROOT / "k8s"
PLAIN = K8S / "payments-service.yaml"
KIND_MANIFESTS = [
    *sorted((K8S / "observability").glob("*.yaml")),
    K8S / "postgres" / "postgres.yaml",
]
SCRIPTS = sorted((K8S / "kind").glob("*.sh"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_plain_manifests_match_the_chart() -> None:
    assert PLAIN.read_text() == plain_manifests(), "k8s/ is stale: run make manifests"


@pytest.mark.parametrize("path", [PLAIN, *KIND_MANIFESTS], ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_files_are_valid_for_kubernetes(path: Path) -> None:
    import kubernetes_validate

    for obj in documents(path):
        for version in ("1.31.0", "1.37.0"):
            kubernetes_validate.validate(obj, version, strict=True)


def test_plain_manifests_namespace_enforces_the_restricted_profile() -> None:
    namespace = find(documents(PLAIN), "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_versions_agree_across_pyproject_chart_and_scripts() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert f"payments-service:{version}" in (K8S / "kind" / "up.sh").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["payment-service"]["image"] == f"payments-service:{version}"


def test_kind_values_point_at_the_kind_observability_stack() -> None:
    stack = [obj for path in KIND_MANIFESTS for obj in documents(path)]
    values = load_values(K8S / "kind" / "values.yaml")
    host, port = re.fullmatch(r"http://([^:]+):(\d+)", values["tracing"]["endpoint"]).groups()  # type: ignore[union-attr]
    service_name, service_namespace = host.split(".")[:2]
    collector = find(stack, "Service", service_name)
    assert collector["metadata"]["namespace"] == service_namespace
    assert int(port) in {p["port"] for p in collector["spec"]["ports"]}
    # The chart's NetworkPolicy defaults name the namespaces this stack creates.
    with_policy = manifests(render({"networkPolicy": {"enabled": True}}))
    assert with_policy
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]
    namespaces = {o["metadata"]["name"] for o in stack if o["kind"] == "Namespace"}
    for peers in (defaults["metricsFrom"], defaults["otlpTo"]):
        for peer in peers:
            assert (
                peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                in namespaces
            )


def test_kind_prometheus_honours_the_pod_annotations() -> None:
    stack = documents(K8S / "observability" / "prometheus.yaml")
    config_text = find(stack, "ConfigMap", "prometheus")["data"]["prometheus.yml"]
    config = yaml.safe_load(config_text)
    (job,) = config["scrape_configs"]
    sources = {tuple(rule.get("source_labels", ())) for rule in job["relabel_configs"]}
    for annotation in ("scrape", "port", "path"):
        label = f"__meta_kubernetes_pod_annotation_prometheus_io_{annotation}"
        assert any(label in labels for labels in sources), annotation


def test_compose_prometheus_config_passes_promtool() -> None:
    # (Debian's promtool is built without Kubernetes discovery, so only this config.)
    config = K8S / "compose" / "prometheus.yml"
    assert_tool_passes("promtool", "check", "config", "--syntax-only", str(config))


def test_dev_postgres_secret_feeds_the_postgres_values() -> None:
    objects = documents(K8S / "postgres" / "postgres.yaml")
    postgres_values = load_values(K8S / "kind" / "values-postgres.yaml")["storage"]["postgres"]
    secret = find(objects, "Secret", postgres_values["existingSecret"])
    url = secret["stringData"][postgres_values["secretKey"]]
    service = find(objects, "Service", "postgres")
    assert url.startswith("postgresql://") and f"@postgres.{NAMESPACE}.svc:5432/" in url
    assert {p["port"] for p in service["spec"]["ports"]} == {5432}
    pod = find(objects, "StatefulSet", "postgres")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True  # the namespace enforces restricted


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_kind_scripts_pass_shellcheck(script: Path) -> None:
    assert_tool_passes("shellcheck", "--severity=style", str(script))
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


def run_checkov(directory: Path, *skips: str) -> list[str]:
    """Failed checks of checkov's kubernetes and dockerfile frameworks over ``directory``."""
    checkov = require_tool("checkov")
    command = [checkov, "--quiet", "--compact", "-o", "json"]
    command += ["--framework", "kubernetes", "dockerfile"]
    command += ["--directory", str(directory), "--skip-download"]
    command += [f"--skip-check={skip}" for skip in skips]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    output = json.loads(result.stdout)
    reports = output if isinstance(output, list) else [output]  # one report per framework
    passed = {report["check_type"]: report["summary"]["passed"] for report in reports}
    assert passed.get("kubernetes", 0) > 0, result.stderr
    if (directory / "Dockerfile").exists():
        assert passed.get("dockerfile", 0) > 0, result.stderr
    return [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for report in reports
        for c in report["results"]["failed_checks"]
    ]


def write_rendered(directory: Path, values_file: Path) -> None:
    rendered = manifests(render(load_values(values_file)))
    out = directory / f"{values_file.parent.name}-{values_file.stem}.yaml"
    out.write_text(yaml.safe_dump_all(rendered))


PRODUCTION = CHART / "ci" / "production-values.yaml"


def test_checkov_passes_on_the_production_scenario_and_the_dockerfile(tmp_path: Path) -> None:
    """No check skipped on the command line; the few skips are checkov.io/skip annotations
    next to the resource, each with its reason."""
    (tmp_path / "Dockerfile").write_text((ROOT / "Dockerfile").read_text())
    write_rendered(tmp_path, PRODUCTION)
    failed = run_checkov(tmp_path)
    assert failed == [], "\n".join(failed)


def test_checkov_passes_on_the_other_scenarios_and_k8s(tmp_path: Path) -> None:
    for values_file in [*SCENARIOS, *KIND_VALUES]:
        if values_file != PRODUCTION:
            write_rendered(tmp_path, values_file)
    (tmp_path / "plain.yaml").write_text(PLAIN.read_text())
    for path in KIND_MANIFESTS:
        (tmp_path / f"k8s-{path.name}").write_text(path.read_text())
    # CKV2_K8S_6 (every pod selected by a NetworkPolicy) is skipped for these only: the
    # chart's NetworkPolicy is opt-in (networkPolicy.enabled; the production scenario above is
    # checked with it), and Jaeger, Prometheus and the development PostgreSQL are a throwaway
    # local stack for kind. Graph checks ignore checkov.io/skip annotations, hence the flag.
    failed = run_checkov(tmp_path, "CKV2_K8S_6")
    assert failed == [], "\n".join(failed)
