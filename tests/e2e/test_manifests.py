"""k8s/: the plain manifests (no drift from the chart), the kind stack, the dev PostgreSQL,
the kind scripts, and checkov over everything the chart and k8s/ deploy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import (
    CHART,
    KIND_VALUES,
    KUBE_VERSIONS,
    NAMESPACE,
    SCENARIOS,
    assert_tool_passes,
    load_values,
    manifests,
    render,
)
from tests.support.environment import ROOT, require_tool

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


def plain_manifests() -> str:
    """What `make manifests` writes: k8s/render_manifests.py's output."""
    done = subprocess.run(
        [sys.executable, str(K8S / "render_manifests.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=ROOT,
    )
    return done.stdout


def test_plain_manifests_match_the_chart() -> None:
    assert PLAIN.read_text() == plain_manifests(), "k8s/ is stale: run make manifests"


def test_plain_manifests_can_be_adopted_by_helm_later() -> None:
    """Helm adopts an existing object only when its managed-by label says Helm and its
    meta.helm.sh annotations name the release; objects that claim Helm without them make
    `helm install` fail. kubectl-applied objects say kubectl (docs/deployment.md tells how
    to hand them to Helm)."""
    objects = documents(PLAIN)
    assert objects
    for obj in objects:
        for labels in (
            obj["metadata"].get("labels", {}),
            obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}),
        ):
            assert labels.get("app.kubernetes.io/managed-by") in (None, "kubectl"), obj["kind"]


def test_one_jaeger_everywhere_and_it_is_v2() -> None:
    """Compose, the kind stack and every docker run in the docs use the same pinned Jaeger."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    stack = documents(K8S / "observability" / "jaeger.yaml")
    (deployment,) = [o for o in stack if o["kind"] == "Deployment"]
    images = {compose["services"]["jaeger"]["image"]}
    images |= {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        images |= set(re.findall(r"jaegertracing/[a-z-]+:[\w.]+", doc.read_text()))
    (image,) = images
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", image), image
    assert "COLLECTOR_OTLP_ENABLED" not in (ROOT / "README.md").read_text()  # a v1 setting


@pytest.mark.parametrize("path", [PLAIN, *KIND_MANIFESTS], ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_files_are_valid_for_kubernetes(path: Path) -> None:
    import kubernetes_validate

    for obj in documents(path):
        for version in KUBE_VERSIONS:
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
    assert url.startswith("postgresql://")
    assert f"@postgres.{NAMESPACE}.svc:5432/" in url
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


PLATFORM = CHART / "ci" / "platform-values.yaml"


def test_checkov_passes_on_the_platform_scenario(tmp_path: Path) -> None:
    """Two checks are off here, for what that scenario does on purpose: CKV_K8S_40 (a fixed
    high UID) because OpenShift assigns the user, CKV_K8S_11 (a CPU limit) because it removes
    the limit (resources.limits.cpu: null) as teams do to avoid CPU throttling."""
    write_rendered(tmp_path, PLATFORM)
    failed = run_checkov(tmp_path, "CKV_K8S_40", "CKV_K8S_11")
    assert failed == [], "\n".join(failed)


def test_checkov_passes_on_the_other_scenarios_and_k8s(tmp_path: Path) -> None:
    for values_file in [*SCENARIOS, *KIND_VALUES]:
        if values_file not in (PRODUCTION, PLATFORM):
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
