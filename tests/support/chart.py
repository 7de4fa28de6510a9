"""Rendering the Helm chart with the real Helm engine (helm-python-sdk), for the chart tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from payments_service.config import Settings, load_settings
from tests.support.environment import ROOT, require, require_tool

CHART = ROOT / "helm" / "payments-service"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
KIND_VALUES = sorted((ROOT / "k8s" / "kind").glob("values*.yaml"))
#: Kubernetes versions the rendered objects must validate against: every version from the
#: oldest the chart supports (Chart.yaml kubeVersion) to 1.33, the kind node's (k8s/kind/
#: cluster.yaml) and the newest kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.35.0", "1.37.0")
RELEASE = "payments-service"
NAMESPACE = "payments"
#: The chart has no default image (there is no public one): every render names one.
IMAGE_VALUES: dict[str, Any] = {"image": {"repository": "payments-service"}}


def helm() -> Any:
    """The helm_python module (the real Helm v4 engine), or skip/fail when missing."""
    try:
        import helm_python
    except ImportError:  # pragma: no cover - depends on the environment
        require(False, "helm-python-sdk is not installed")
    return helm_python


def load_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict)
    return data


def render(
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    image: bool = True,
) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included); ``image`` adds IMAGE_VALUES under
    ``values`` (the chart refuses to render without an image repository)."""
    given = deep_merge(IMAGE_VALUES, values or {}) if image else values or {}
    with helm().Chart.load(CHART) as chart:
        rendered: dict[str, str] = chart.render(values=given, name=release, namespace=namespace)
    return rendered


def manifests(rendered: dict[str, str], *, with_tests: bool = True) -> list[dict[str, Any]]:
    """Every Kubernetes object in a render, in template order."""
    objects: list[dict[str, Any]] = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt") or (not with_tests and "/templates/tests/" in path):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(rendered[path]) if doc)
    return objects


def objects_of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def single_object(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one object of ``kind`` in a render (an AssertionError when there are more or none)."""
    found = objects_of(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload in a render."""
    for obj in objects:
        if obj["kind"] == "Pod":
            yield obj["metadata"]["name"], obj["spec"]
        elif obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def assert_tool_passes(tool: str, *args: str) -> None:
    """Run a checker (hadolint, shellcheck, promtool, ...) and fail with its output."""
    import subprocess

    binary = require_tool(tool)
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def mount_tls_secret(directory: Path) -> None:
    """What the kubelet mounts from a kubernetes.io/tls Secret with ca.crt (mutual TLS)."""
    from tests.support.certificates import CertificateAuthority

    authority = CertificateAuthority(directory)
    server = authority.issue("server", server=True)
    authority.issue("client", server=False)
    (directory / "tls.crt").write_bytes(server.certificate)
    (directory / "tls.key").write_bytes(server.key)
    (directory / "ca.crt").write_bytes(authority.pem)


def container_env(
    objects: list[dict[str, Any]], container: str = "payments-service"
) -> dict[str, Any]:
    """A container's environment: ConfigMap entries overlaid by ``env`` entries.

    Plain values are strings; ``valueFrom`` entries are returned as their source dict.
    """
    deployment = single_object(objects, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    (main,) = [c for c in containers if c["name"] == container]
    configmaps = {
        cm["metadata"]["name"]: cm.get("data", {}) for cm in objects_of(objects, "ConfigMap")
    }
    env: dict[str, Any] = {}
    for source in main.get("envFrom", []):
        if "configMapRef" in source:  # a secretRef (extraEnvFrom) holds what only the cluster knows
            env.update(configmaps[source["configMapRef"]["name"]])
    for item in main.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


#: Where the chart mounts the TLS Secret (the settings name files there).
TLS_DIR = "/etc/payments-service/tls"


def rendered_settings(
    objects: list[dict[str, Any]], tls_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The service's own settings loader on what the rendered server container gets.

    Values only the cluster knows (secretKeyRef, fieldRef) get stand-ins; the TLS files are a
    test CA's, mounted in ``tls_dir`` where the Secret would be. A setting the service refuses
    raises ConfigurationError with the service's own one-line message.
    """
    env = container_env(objects)
    mount_tls_secret(tls_dir)
    for name in [*Settings.model_fields, *env]:
        monkeypatch.delenv(name.upper(), raising=False)
    for key, value in env.items():
        if isinstance(value, dict):
            value = "postgresql://u:p@db:5432/payments" if key == "DATABASE_URL" else "x"
        monkeypatch.setenv(key, value.replace(TLS_DIR, str(tls_dir)))
    return load_settings()
