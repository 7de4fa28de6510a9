"""Rendering the Helm chart with the real Helm engine (helm-python-sdk), for the chart tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, require, require_tool

CHART = ROOT / "helm" / "payments-service"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
KIND_VALUES = sorted((ROOT / "k8s" / "kind").glob("values*.yaml"))
RELEASE = "payments-service"
NAMESPACE = "payments"


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
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included)."""
    with helm().Chart.load(CHART) as chart:
        rendered: dict[str, str] = chart.render(
            values=values or {}, name=release, namespace=namespace
        )
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


def the(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
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
    from tests.integration.certificates import CertificateAuthority

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
    deployment = the(objects, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    (main,) = [c for c in containers if c["name"] == container]
    configmaps = {
        cm["metadata"]["name"]: cm.get("data", {}) for cm in objects_of(objects, "ConfigMap")
    }
    env: dict[str, Any] = {}
    for source in main.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for item in main.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


NAMESPACE_MANIFEST = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    # Pods that break the restricted Pod Security Standard are refused in this namespace.
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
"""


def plain_manifests() -> str:
    """The chart rendered with default values as one multi-document file for kubectl apply."""
    rendered = render()
    parts = [
        "# Generated by `make manifests` from helm/payments-service with its default values\n"
        f"# (release {RELEASE}, namespace {NAMESPACE}). Do not edit: change the chart instead.\n"
        f"#   kubectl apply -f k8s/{RELEASE}.yaml\n",
        NAMESPACE_MANIFEST,
    ]
    for path in sorted(rendered):
        if path.endswith("NOTES.txt") or "/templates/tests/" in path:
            continue
        text = rendered[path].strip()
        if text:
            parts.append(text.removeprefix("---").lstrip("\n") + "\n")
    return "---\n".join(parts)


if __name__ == "__main__":
    import sys

    sys.stdout.write(plain_manifests())
