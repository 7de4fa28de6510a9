"""k8s/kind/up.sh and smoke.sh, run for real with kind, docker, kubectl and helm replaced on PATH
(no Docker engine or cluster runs here). The stand-ins record their arguments; kubectl's
port-forward really listens and forwards to a real server and a real Prometheus."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART, manifests, render, single_object
from tests.support.environment import ROOT, require_tool
from tests.support.kind_prometheus import discovered_target, kind_prometheus_config
from tests.support.network import free_port, wait_for_port
from tests.support.servers import RunningServer, ServerFactory, make_settings

pytestmark = pytest.mark.tools

KIND = ROOT / "k8s" / "kind"

#: A stand-in that records its arguments, one call per line, and answers what the scripts ask.
RECORDER = r"""#!/usr/bin/env bash
printf '%s %s\n' "$(basename "$0")" "$*" >> "$STUB_LOG"
case "$(basename "$0") $1" in
  "kind version") echo "kind v${STUB_KIND_VERSION} go1.25.5 linux/amd64" ;;
  "docker buildx") [ "$2" != version ] || exit "${STUB_BUILDX_MISSING:-0}" ;;
esac
exit 0
"""


def stub_path(tmp_path: Path, names: tuple[str, ...], extra: dict[str, str] | None = None) -> str:
    """A PATH whose first directory holds recording stand-ins for ``names``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    for name, text in (extra or {}).items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), "/usr/bin", "/bin"])


def run_script(name: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run k8s/kind/<name> with exactly ``env`` (PATH included)."""
    return subprocess.run(
        ["bash", str(KIND / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_up(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = tmp_path / "calls.log"
    path = stub_path(tmp_path, ("docker", "kind", "kubectl", "helm"))
    full_env = {"PATH": path, "HOME": str(tmp_path), "STUB_LOG": str(log)}
    full_env.update({"STUB_KIND_VERSION": "0.31.0", **env})
    result = run_script("up.sh", full_env, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def call(calls: list[str], prefix: str) -> str:
    found = [c for c in calls if c.startswith(prefix)]
    assert found, f"no call starting with {prefix!r} in:\n" + "\n".join(calls)
    return found[0]


# --- up.sh ----------------------------------------------------------------------------------


def test_up_builds_without_provenance_so_kind_can_load_it(tmp_path: Path) -> None:
    """kind cannot import BuildKit's attestations from Docker's containerd store (kind#3795)."""
    result, calls = run_up(tmp_path)
    assert result.returncode == 0, result.stderr
    build = call(calls, "docker buildx build")
    assert "--provenance=false" in build
    assert "--load" in build
    assert call(calls, "kind load docker-image").startswith(
        "kind load docker-image payments-service:0.1.0"
    )
    # Without buildx (the legacy builder makes no attestations) the plain build is used.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    result, calls = run_up(legacy, STUB_BUILDX_MISSING="1")
    assert result.returncode == 0, result.stderr
    assert call(calls, "docker build --tag payments-service:0.1.0")


def test_up_refuses_a_kind_too_old_for_the_pinned_node_image(tmp_path: Path) -> None:
    result, calls = run_up(tmp_path, STUB_KIND_VERSION="0.20.0")
    assert result.returncode == 1
    assert "needs kind v0.31.0 or newer (found: kind v0.20.0" in result.stderr
    assert not [c for c in calls if c.startswith(("kind create", "docker", "helm"))]


@pytest.mark.parametrize(
    ("image", "repository", "tag"),
    [
        ("payments-service:0.1.0", "payments-service", "0.1.0"),
        ("payments-service:20240101", "payments-service", "20240101"),
        (
            "localhost:5000/payments/payments-service:1.2",
            "localhost:5000/payments/payments-service",
            "1.2",
        ),
        ("registry.local:5000/payments-service", "registry.local:5000/payments-service", "latest"),
    ],
)
def test_up_installs_the_image_it_built(
    tmp_path: Path, image: str, repository: str, tag: str
) -> None:
    result, calls = run_up(tmp_path, IMAGE=image)
    assert result.returncode == 0, result.stderr
    install = call(calls, "helm upgrade --install")
    # --set-string: a tag of digits stays a string.
    assert f"--set-string image.repository={repository} " in install
    assert f"--set-string image.tag={tag} " in install
    assert f"--tag {image} " in call(calls, "docker buildx build")
    # What helm would get renders the image that was loaded into kind.
    values = yaml.safe_load((KIND / "values.yaml").read_text())
    values["image"].update(repository=repository, tag=tag)
    (container,) = single_object(manifests(render(values)), "Deployment")["spec"]["template"][
        "spec"
    ]["containers"]
    assert container["image"] == (image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest")


def test_up_restarts_prometheus_when_the_alert_rules_change(tmp_path: Path) -> None:
    """Prometheus reads its rules at start; the kind stack has no config reloader."""
    result, calls = run_up(tmp_path)
    assert result.returncode == 0, result.stderr
    rules = CHART / "files" / "alerts.yaml"
    call(
        calls,
        "kubectl --context kind-payments -n monitoring create configmap prometheus-rules "
        f"--from-file=alerts.yaml={rules}",
    )
    checksum = hashlib.sha256(rules.read_bytes()).hexdigest()[:16]
    patch = call(calls, "kubectl --context kind-payments -n monitoring patch deployment prometheus")
    assert f'"payments-service/rules-checksum":"{checksum}"' in patch
    # ... before waiting for the rollout, so the wait covers the restart.
    assert calls.index(patch) < calls.index(
        call(calls, "kubectl --context kind-payments -n monitoring rollout status")
    )


def test_the_kind_node_is_pinned_and_new_enough_for_the_chart() -> None:
    cluster = yaml.safe_load((KIND / "cluster.yaml").read_text())
    images = {node["image"] for node in cluster["nodes"]}
    (image,) = images
    match = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.(\d+)@sha256:[0-9a-f]{64}", image)
    assert match, image
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    supported = re.match(r">=(\d+)\.(\d+)\.(\d+)", chart["kubeVersion"])
    assert supported, chart["kubeVersion"]
    minimum = tuple(int(p) for p in supported.groups())
    assert tuple(int(p) for p in match.groups()) >= minimum
    # The workflow installs the kind that up.sh asks for.
    script = (KIND / "up.sh").read_text()
    (required,) = re.findall(r"^kind_minimum=([0-9.]+)$", script, re.MULTILINE)
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "kind-e2e.yml").read_text())
    steps = workflow["jobs"]["kind"]["steps"]
    (kind_step,) = [s for s in steps if str(s.get("uses", "")).startswith("helm/kind-action@")]
    assert kind_step["with"]["version"] == f"v{required}"
    for step in steps:  # third-party actions that install tools are pinned by commit
        if str(step.get("uses", "")).startswith(("helm/", "azure/")):
            assert re.fullmatch(r"[\w/-]+@[0-9a-f]{40}", step["uses"]), step["uses"]


# --- smoke.sh -------------------------------------------------------------------------------

#: kubectl's port-forward: listen on 127.0.0.1:LOCAL (failing like kubectl when it is taken),
#: then forward each connection to the backend STUB_FORWARDS names for the service.
PORT_FORWARD = r"""#!PYTHON
import json, os, socket, sys, threading, time
args = sys.argv[1:]
if "port-forward" not in args:
    sys.exit(0)
service = args[args.index("port-forward") + 1].split("/", 1)[1]
local = int(args[args.index("port-forward") + 2].split(":")[0])
host, port, delay = json.loads(os.environ["STUB_FORWARDS"])[service]
time.sleep(delay)
listener = socket.socket()
try:
    listener.bind(("127.0.0.1", local))
except OSError as error:
    sys.stderr.write(f"Unable to listen on port {local}: {error}\n")
    sys.exit(1)
listener.listen(16)

def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

while True:
    client, _ = listener.accept()
    try:
        upstream = socket.create_connection((host, port), timeout=5)
    except OSError:
        client.close()
        continue
    upstream.settimeout(None)
    for a, b in ((client, upstream), (upstream, client)):
        threading.Thread(target=pipe, args=(a, b), daemon=True).start()
"""


class TracesApi(http.server.BaseHTTPRequestHandler):
    """Jaeger's query API as kind-smoke reads it (no Jaeger runs here): one trace of the
    service asked for."""

    def do_GET(self) -> None:
        body = json.dumps({"data": [{"traceID": "4bf92f3577b34da6a3ce929d0e0e4736"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def http_server() -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TracesApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def run_smoke(
    tmp_path: Path, forwards: dict[str, tuple[str, int, float]], **env: str
) -> subprocess.CompletedProcess[str]:
    grpcurl = require_tool("grpcurl")
    kubectl = PORT_FORWARD.replace("#!PYTHON", f"#!{sys.executable}")
    path = stub_path(tmp_path, (), {"kubectl": kubectl})
    path = os.pathsep.join([path, str(Path(grpcurl).parent)])
    ports = {
        "SMOKE_GRPC_PORT": free_port(),
        "SMOKE_PROMETHEUS_PORT": free_port(),
        "SMOKE_JAEGER_PORT": free_port(),
    }
    full_env = {"PATH": path, "HOME": str(tmp_path), "STUB_FORWARDS": json.dumps(forwards)}
    full_env.update({k: str(v) for k, v in ports.items()})
    full_env.update(env)
    return run_script("smoke.sh", full_env, timeout=120)


@pytest.fixture
def kind_prometheus(
    tmp_path: Path, server_factory: ServerFactory
) -> Iterator[tuple[RunningServer, int]]:
    """A real server as the chart runs it, scraped by a real Prometheus with kind's config."""
    binary = require_tool("prometheus")
    metrics = free_port()
    server = server_factory(make_settings(metrics_port=metrics, reflection_enabled=True))
    pod = single_object(manifests(render({"ports": {"metrics": metrics}})), "Deployment")["spec"][
        "template"
    ]
    _address, labels = discovered_target(pod)
    config = kind_prometheus_config(f"127.0.0.1:{metrics}", labels)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    web = free_port()
    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(web, timeout=30)
        yield server, web
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


def test_smoke_passes_when_port_forwards_and_prometheus_come_up_slowly(
    tmp_path: Path, kind_prometheus: tuple[RunningServer, int]
) -> None:
    """Prometheus' port-forward takes 3 s and its first queries find nothing: kind-smoke waits
    for each port-forward and keeps polling through connection errors."""
    server, web = kind_prometheus
    jaeger, jaeger_port = http_server()
    try:
        forwards = {
            "payments-service": ("127.0.0.1", server.port, 0.0),
            "prometheus": ("127.0.0.1", web, 3.0),
            "jaeger-query": ("127.0.0.1", jaeger_port, 1.0),
        }
        result = run_smoke(tmp_path, forwards)
    finally:
        jaeger.shutdown()
        jaeger.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kind-smoke: all checks passed" in result.stdout


def test_smoke_refuses_a_local_port_another_stack_holds(tmp_path: Path) -> None:
    """A compose Jaeger on the local port would answer the trace query for the cluster's."""
    other, other_port = http_server()  # someone else's Jaeger, with traces of the service
    try:
        dead = ("127.0.0.1", free_port(), 0.0)
        forwards = {"payments-service": dead, "prometheus": dead, "jaeger-query": dead}
        result = run_smoke(tmp_path, forwards, SMOKE_JAEGER_PORT=str(other_port))
    finally:
        other.shutdown()
        other.server_close()
    assert result.returncode == 1
    assert f"localhost:{other_port} is taken" in result.stderr


def test_smoke_default_ports_leave_the_compose_stack_alone() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    published = {
        int(p.split(":")[0])
        for s in compose["services"].values()
        for p in s.get("ports", [])
        if p.split(":")[0].isdigit()
    }
    script = (KIND / "smoke.sh").read_text()
    defaults = {int(p) for p in re.findall(r"SMOKE_\w+_PORT:-(\d+)", script)}
    assert len(defaults) == 3
    assert not defaults & published
