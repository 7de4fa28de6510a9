"""The kubelet's view: run the real server exactly as the rendered Deployment says, probe it.

The container's command, args, environment (ConfigMap plus env, downward-API values filled
in and $(VAR) references expanded as the kubelet does) and ports come from the chart rendered
by the real Helm engine; only the image's interpreter path is swapped for this venv's python.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments_service import payments_pb2_grpc
from tests.support.chart import (
    NAMESPACE,
    container_env,
    manifests,
    mount_tls_secret,
    render,
    single_object,
)
from tests.support.environment import ROOT
from tests.support.network import free_port
from tests.support.requests import valid_request

pytestmark = pytest.mark.tools

POD_NAME = "payments-service-7d9c8b6f5-x2k4q"
NODE_NAME = "kind-worker"
#: What the downward API gives the fields the chart asks for.
DOWNWARD = {"metadata.name": POD_NAME, "metadata.namespace": NAMESPACE, "spec.nodeName": NODE_NAME}


def kubelet_env(
    objects: list[dict[str, Any]],
    container: str = "payments-service",
    secrets: dict[tuple[str, str], str] | None = None,
) -> dict[str, str]:
    """The container's environment as the kubelet builds it (ConfigMap first, then env),
    with downward-API fields and Secret keys (``secrets[(name, key)]``) filled in."""
    env: dict[str, str] = {}
    for name, value in container_env(objects, container).items():
        if isinstance(value, dict) and "secretKeyRef" in value:
            reference = value["secretKeyRef"]
            value = (secrets or {})[(reference["name"], reference["key"])]
        elif isinstance(value, dict):
            value = DOWNWARD[value["fieldRef"]["fieldPath"]]
        # $(VAR) expands to a variable defined earlier; unknown references stay as written.
        env[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)
    return env


def probe(port: int, spec: dict[str, Any]) -> bool:
    """One gRPC probe as the kubelet runs it: a fresh plaintext connection, one Check."""
    assert spec["grpc"]["port"] == port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=spec["grpc"].get("service", "")),
                timeout=spec["timeoutSeconds"],
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


class Load:
    """Clients calling RequestPayment in a loop, recording every status code."""

    def __init__(self, channel: grpc.Channel, threads: int = 4) -> None:
        self.threads = threads
        self.codes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._channel = channel
        self._stub = payments_pb2_grpc.PaymentServiceStub(self._channel)
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def drain(self) -> None:
        """Start no new calls: the pod has left the Service's endpoints during preStop."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            request = valid_request(currency="USD", order_id="order-1")
            try:
                self._stub.RequestPayment(request, timeout=10)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            with self._lock:
                self.codes[code] += 1

    def ok(self) -> int:
        with self._lock:
            return self.codes["OK"]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        self._channel.close()


def api_channel(port: int, tls_dir: Path | None) -> grpc.Channel:
    """A client of the API port: plaintext, or mutual TLS with the test CA's client cert."""
    if tls_dir is None:
        return grpc.insecure_channel(f"127.0.0.1:{port}")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(tls_dir / "ca.crt").read_bytes(),
        private_key=(tls_dir / "client.key").read_bytes(),
        certificate_chain=(tls_dir / "client.pem").read_bytes(),
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


DATABASE_SECRET = ("payments-database", "database-url")


@pytest.fixture(params=["plaintext", "mutual-tls", "postgres"])
def scenario(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, dict[str, Any], dict[Any, str]]]:
    """(name, chart values, Secret contents) of a pod the kubelet starts."""
    if request.param == "plaintext":
        yield request.param, {}, {}
    elif request.param == "mutual-tls":
        yield request.param, {"tls": {"enabled": True, "secretName": "tls", "mutual": True}}, {}
    else:
        from tests.support.postgres import fresh_database

        values = {
            "storage": {
                "backend": "postgres",
                "postgres": {"existingSecret": DATABASE_SECRET[0], "secretKey": DATABASE_SECRET[1]},
            }
        }
        with fresh_database(migrate=False) as url:  # empty: the init container migrates it
            yield request.param, values, {DATABASE_SECRET: url}


def run_init_containers(
    objects: list[dict[str, Any]], secrets: dict[tuple[str, str], str]
) -> list[str]:
    """Run each init container to completion, as the kubelet does before the server starts."""
    spec = single_object(objects, "Deployment")["spec"]["template"]["spec"]
    names = []
    for init in spec.get("initContainers", []):
        command = [sys.executable, *init["command"][1:], *init.get("args", [])]
        env = {
            "PATH": os.environ["PATH"],
            "HOME": "/tmp",
            **kubelet_env(objects, init["name"], secrets),
        }
        for _attempt in range(2):  # a restarted pod runs it again: it must be repeatable
            done = subprocess.run(
                command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
            )
            assert done.returncode == 0, done.stdout + done.stderr
        names.append(init["name"])
    return names


def test_pod_lifecycle_as_the_kubelet_sees_it(
    scenario: tuple[str, dict[str, Any], dict[Any, str]], tmp_path: Path
) -> None:
    name, values, secrets = scenario
    tls = name == "mutual-tls"
    grpc_port, metrics_port, health_port = free_port(), free_port(), free_port()
    values = {
        **values,
        "ports": {"grpc": grpc_port, "metrics": metrics_port, "health": health_port},
    }
    objects = manifests(render(values))
    assert run_init_containers(objects, secrets) == (["migrate"] if name == "postgres" else [])
    pod = single_object(objects, "Deployment")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": grpc_port, "metrics": metrics_port, "health": health_port}
    # The kubelet probes the plaintext health-only port, with or without TLS: on the API
    # port its probes would compete with API calls for MAX_CONCURRENT_RPCS and the workers.
    probe_port = health_port

    command = [sys.executable, *container["command"][1:], *container.get("args", [])]
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", **kubelet_env(objects, secrets=secrets)}
    assert env["OTEL_RESOURCE_ATTRIBUTES"].startswith(
        f"k8s.pod.name={POD_NAME},k8s.namespace.name={NAMESPACE},"
    )
    tls_dir = None
    if tls:
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
        tls_dir = tmp_path
        mount_tls_secret(tls_dir)
        env = {k: v.replace(mount["mountPath"], str(tls_dir)) for k, v in env.items()}
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Startup probe: it must pass within failureThreshold attempts, periodSeconds apart.
        # Then readiness, probed every periodSeconds, must pass within the same budget (on
        # PostgreSQL it follows the database check); liveness passes at once.
        startup = container["startupProbe"]
        for spec in (startup, container["readinessProbe"]):
            for _attempt in range(startup["failureThreshold"]):
                if probe(probe_port, spec):
                    break
                assert process.poll() is None, "".join(output)
                threading.Event().wait(spec["periodSeconds"])
            else:
                pytest.fail(f"{spec['grpc']} never passed:\n" + "".join(output))
        assert probe(probe_port, container["livenessProbe"])
        if tls:  # the API port itself refuses plaintext
            assert not probe(grpc_port, {**startup, "grpc": {"port": grpc_port}})

        # What annotation-based Prometheus scrapes.
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == ports["metrics"]
        url = f"http://127.0.0.1:{annotations['prometheus.io/port']}{annotations['prometheus.io/path']}"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            assert "# TYPE" in response.read().decode()

        # Rolling update: the kubelet runs preStop (a pause), then sends SIGTERM.
        spec = pod["spec"]
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        budget = spec["terminationGracePeriodSeconds"] - pause
        with Load(api_channel(grpc_port, tls_dir)) as load:
            while load.ok() < 20:
                assert process.poll() is None, "".join(output)
                threading.Event().wait(0.05)
            load.drain()
            process.send_signal(signal.SIGTERM)
            try:
                while "Received signal SIGTERM" not in lines.get(timeout=budget):
                    pass
            except queue.Empty:
                pytest.fail("no shutdown line in the log after SIGTERM:\n" + "".join(output))
            # Readiness fails at once (before the kubelet's next readiness probe is due), so
            # the pod leaves the Service's endpoints while calls in flight still finish.
            readiness = container["readinessProbe"]
            due = time.monotonic() + readiness["periodSeconds"]
            while probe(probe_port, readiness):
                assert time.monotonic() < due, "readiness still SERVING a period after SIGTERM"
            assert process.wait(timeout=budget) == 0, "".join(output)
        # Calls in flight at SIGTERM finished. Only a call each client thread started in the
        # instant of the signal may have reached the server after its shutdown began: those
        # are refused (UNAVAILABLE, or CANCELLED as grpc-core answers such a call).
        refused = sum(n for code, n in load.codes.items() if code != "OK")
        assert set(load.codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, load.codes
        assert refused <= load.threads, load.codes
        assert load.codes["OK"] >= 20
        if DATABASE_SECRET in secrets:  # every acknowledged payment is in the shared database
            from tests.support.postgres import rows

            ((stored,),) = rows(secrets[DATABASE_SECRET], "SELECT count(*) FROM payments")
            assert load.codes["OK"] <= stored <= load.codes["OK"] + refused
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        assert process.stdout is not None
        process.stdout.close()
