"""The shell lines that run the project's CLI inside the image (Dockerfile HEALTHCHECK, the
`helm test` pod, the compose test client), run here for real against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningServer, free_port
from tests.e2e.chart_support import manifests, objects_of, render
from tests.e2e.test_compose import compose
from tests.e2e.test_dockerfile import values_of

pytestmark = pytest.mark.tools

#: The image puts its venv first on PATH; here the venv is this interpreter's.
IMAGE_PATH = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])


def run_shell(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env={"PATH": IMAGE_PATH, "HOME": "/tmp", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_documents(output: str) -> list[dict[str, object]]:
    """The CLI prints one indented JSON document per call."""
    return [json.loads(part) for part in re.split(r"(?<=\})\n(?=\{)", output.strip())]


def test_dockerfile_healthcheck_asks_the_api_port_or_the_health_port(
    server: RunningServer,
) -> None:
    (healthcheck,) = values_of("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    healthy = run_shell(command, {"PORT": str(server.port)})
    assert healthy.returncode == 0, healthy.stderr
    assert "SERVING" in healthy.stdout
    # With HEALTH_PORT set (the chart always sets it), it asks that port: nothing listens there.
    elsewhere = run_shell(command, {"PORT": str(server.port), "HEALTH_PORT": str(free_port())})
    assert elsewhere.returncode != 0


def test_helm_test_pod_script_passes_against_a_server(server: RunningServer) -> None:
    (pod,) = objects_of(manifests(render()), "Pod")
    (container,) = pod["spec"]["containers"]
    script = container["args"][0].replace("payments-service:7000", f"127.0.0.1:{server.port}")
    result = run_shell([*container["command"], script])
    assert result.returncode == 0, result.stdout + result.stderr
    answers = json_documents(result.stdout)
    assert answers[0]["status"] == "SERVING"
    assert answers[1]["payment_id"]


def test_compose_test_client_replays_the_same_payment(server: RunningServer) -> None:
    client = compose({"PORT": str(server.port)})["services"]["test-client"]
    script = client["command"][0].replace("payment-service:", "127.0.0.1:")
    result = run_shell([*client["entrypoint"], script])
    assert result.returncode == 0, result.stdout + result.stderr
    answers = json_documents(result.stdout)
    first, again = answers[1], answers[2]
    assert first["payment_id"] == again["payment_id"]
