"""The shell lines that run the project's CLI inside the image (Dockerfile HEALTHCHECK, the
`helm test` pod, the compose test client), run here for real against a real server."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.chart import manifests, mount_tls_secret, objects_of, render
from tests.support.compose import compose
from tests.support.dockerfile import values_of
from tests.support.environment import ROOT, require_tool
from tests.support.network import free_port
from tests.support.servers import RunningServer, ServerFactory, make_settings

pytestmark = pytest.mark.tools

#: The image puts its venv first on PATH; here the venv is this interpreter's.
IMAGE_PATH = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])


def run_shell(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env={"PATH": IMAGE_PATH, "HOME": "/tmp", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
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


def test_helm_test_pod_script_passes_and_writes_nothing(server: RunningServer) -> None:
    """`helm test` runs against the release's real database: however often it runs, it must
    leave no payment behind, and still prove a call goes through the server to its store."""
    (pod,) = objects_of(manifests(render()), "Pod")
    (container,) = pod["spec"]["containers"]
    script = container["args"][0].replace("payments-service:7000", f"127.0.0.1:{server.port}")
    for _run in range(2):
        result = run_shell([*container["command"], script])
        assert result.returncode == 0, result.stdout + result.stderr
        assert json_documents(result.stdout.split("GetPayment")[0])[0]["status"] == "SERVING"
        assert "NOT_FOUND, as expected" in result.stdout
    assert server.count() == 0


def test_helm_test_pod_script_fails_when_the_store_does_not_answer() -> None:
    """Not a test that always passes: with nothing listening where the service should be,
    the script fails."""
    (pod,) = objects_of(manifests(render()), "Pod")
    (container,) = pod["spec"]["containers"]
    script = container["args"][0].replace("payments-service:7000", f"127.0.0.1:{free_port()}")
    result = run_shell([*container["command"], script])
    assert result.returncode != 0


NOTES_MODES: dict[str, dict[str, Any]] = {
    "plaintext": {},
    "reflection-off": {"config": {"reflectionEnabled": False}},
    "tls": {"tls": {"enabled": True, "secretName": "tls"}},
}


@pytest.mark.parametrize("mode", sorted(NOTES_MODES))
def test_every_notes_command_works_against_a_server_in_that_mode(
    mode: str, server_factory: ServerFactory, tmp_path: Path
) -> None:
    """NOTES.txt's health and grpcurl commands, run as printed (the pod's CLI line runs here
    as the pod would run it; the port-forward is the server's own port)."""
    grpcurl = require_tool("grpcurl")
    values: dict[str, Any] = NOTES_MODES[mode]
    settings: dict[str, Any] = {"health_port": free_port(), "port": free_port()}
    settings["reflection_enabled"] = values.get("config", {}).get("reflectionEnabled", True)
    if "tls" in values:
        mount_tls_secret(tmp_path)
        settings["tls_cert_file"] = tmp_path / "tls.crt"
        settings["tls_key_file"] = tmp_path / "tls.key"
    server = server_factory(make_settings(**settings))
    ports = {"ports": {"grpc": server.port, "health": settings["health_port"]}}
    notes = render({**values, **ports, "service": {"port": server.port}})
    text = notes["payments-service/templates/NOTES.txt"]
    ran = []
    for line in text.splitlines():
        if not line.strip().startswith(("grpcurl ", "kubectl ")):
            continue  # prose
        words = shlex.split(line.strip())
        if words[:1] == ["kubectl"] and "exec" in words:
            words = words[words.index("--") + 1 :]  # what runs in the pod
        if words[:1] not in (["grpcurl"], ["payments-client"]):
            continue
        if words[0] == "grpcurl":
            words[0] = grpcurl
        result = run_shell(words, cwd=ROOT)
        assert result.returncode == 0, f"{line.strip()}\n{result.stdout}{result.stderr}"
        ran.append(result.stdout)
    assert any('"SERVING"' in out for out in ran), "no health command in NOTES.txt"
    # grpcurl names the field payment_id with reflection, paymentId from a .proto file.
    assert any(re.search(r"\"payment(_id|Id)\"", out) for out in ran), "no RequestPayment in NOTES"


def test_compose_test_client_replays_the_same_payment(server: RunningServer) -> None:
    client = compose({"PORT": str(server.port)})["services"]["test-client"]
    script = client["command"][0].replace("payment-service:", "127.0.0.1:")
    result = run_shell([*client["entrypoint"], script])
    assert result.returncode == 0, result.stdout + result.stderr
    answers = json_documents(result.stdout)
    first, again = answers[1], answers[2]
    assert first["payment_id"] == again["payment_id"]
