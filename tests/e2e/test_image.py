"""The container image, built from the Dockerfile with podman and run: what the README, the
Dockerfile and the chart promise of it, measured on the running container.

The image is built once for this module (``podman build --format docker --pull=never``,
base image passed as PYTHON_IMAGE: see tests/e2e/containers.py). Then:

- one container as the README runs it (``--read-only --tmpfs /tmp --cap-drop ALL``, ports
  published on 127.0.0.1 only): user, privileges, read-only root, HEALTHCHECK, a payment
  round trip, /metrics, start-up time, memory, and SIGTERM;
- the chart's rendered Deployment under ``podman kube play`` (what podman drops and how the
  test supplies it: ``test_the_charts_deployment_under_podman_kube_play``);
- docker-compose.yml's service and test client under podman-compose.

The figures (image and layer sizes, build, start-up, memory) are printed as they are
measured. Everything the module creates is removed at its end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from payments_service import payments_pb2, payments_pb2_grpc
from payments_service.config import Settings
from tests.support import containers
from tests.support.chart import NAMESPACE, RELEASE, manifests, render, single_object
from tests.support.clients import health
from tests.support.containers import (
    LABEL,
    Image,
    Podman,
    assert_no_privileges,
    assert_read_only_root,
    megabytes,
    proc_status,
    wait_serving,
)
from tests.support.environment import ROOT, require_tool
from tests.support.network import free_port
from tests.support.requests import valid_request

pytestmark = [pytest.mark.tools, pytest.mark.timeout(900)]

USER = (10001, 10001)
SHUTDOWN_LINES = (
    "Received signal SIGTERM, initiating shutdown...",
    "Stopping server (grace period: ",
    "✓ Server stopped successfully",
)
#: The chart's container memory limit: the image must run well inside it.
MEMORY_LIMIT = 256 * 2**20
#: The HEALTHCHECK's --start-period: failures count after it, so start-up must beat it.
HEALTHCHECK_START_PERIOD = 10.0


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Print a measured figure in the test run's output, whatever the capture mode."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[image] {line}")


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    engine = containers.engine()
    try:
        yield engine
    finally:
        engine.clean_up()


@pytest.fixture(scope="module")
def image(podman: Podman, request: pytest.FixtureRequest) -> Image:
    started = time.monotonic()
    base = containers.base_image(podman)
    base_seconds = time.monotonic() - started
    built = containers.build_image(podman, base)
    report(request, f"base {base}: ready in {base_seconds:.1f} s")
    report(request, f"podman build: {built.build_seconds:.1f} s")
    return built


# --- the image as the README runs it ---------------------------------------------------------


@dataclass
class Container:
    name: str
    api: str
    metrics: str
    startup_seconds: float


def run_hardened(podman: Podman, role: str, *extra: str) -> list[str]:
    """The README's docker run options, labelled as this session's."""
    hardening = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
    labelled = ["--name", podman.name(role), "--label", podman.label]
    return ["run", "--detach", *labelled, *hardening, *extra]


@pytest.fixture(scope="module")
def service(podman: Podman, image: Image, request: pytest.FixtureRequest) -> Container:
    api, metrics = free_port(), free_port()
    publish = ["--publish", f"127.0.0.1:{api}:7000", "--publish", f"127.0.0.1:{metrics}:9464"]
    command = run_hardened(podman, "service", *publish)
    started = time.monotonic()
    podman.run(*command, image.reference)
    try:
        startup = wait_serving(f"127.0.0.1:{api}", started)
    except containers.PodmanError as error:
        logs = podman.run("logs", podman.name("service"), check=False)
        raise containers.PodmanError(f"{error}\n{logs.stdout}{logs.stderr}") from error
    report(request, f"start-up: {startup:.2f} s from `podman run` to the first SERVING")
    return Container(podman.name("service"), f"127.0.0.1:{api}", f"127.0.0.1:{metrics}", startup)


def engine_baseline(podman: Podman, image: Image) -> list[str]:
    """What ``podman diff`` shows for a container that ran nothing (files podman adds)."""
    command = run_hardened(podman, "baseline", "--entrypoint", "/bin/true")
    name = podman.name("baseline")
    podman.run(*command, image.reference)
    podman.run("wait", name)
    try:
        return diff(podman, name)
    finally:
        podman.run("rm", "--force", name)


def diff(podman: Podman, container: str) -> list[str]:
    return sorted(podman.run("diff", container).stdout.splitlines())


def test_image_keeps_the_dockerfiles_metadata_and_stays_small(
    podman: Podman, image: Image, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    config = image.inspect["Config"]
    assert image.inspect["User"] == config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/opt/venv/bin/python", "-m", "payments_service"]
    assert config["StopSignal"] == "SIGTERM"
    assert {"7000/tcp", "9464/tcp", "7001/tcp"} <= set(config["ExposedPorts"])
    # --format docker keeps HEALTHCHECK; the OCI image format has no field for it.
    assert "payments-client" in " ".join(image.inspect["Healthcheck"]["Test"])

    layers = containers.layers(podman, image)
    report(request, f"image {image.reference}: {megabytes(image.size)} in {len(layers)} layers")
    for instruction, size in layers:
        report(request, f"  {megabytes(size):>9}  {instruction[:90]}")
    compressed = containers.compressed_size(podman, image, tmp_path)
    report(request, f"  compressed (gzip layers, as a registry holds it): {megabytes(compressed)}")
    (base,) = podman.json("image", "inspect", image.base)
    own = layers[len(base["RootFS"]["Layers"]) :]  # the Dockerfile's own, after the base's
    assert [instruction.split()[0] for instruction, _ in own] == ["groupadd", "COPY"]
    venv = own[-1][1]
    assert "/opt/venv" in own[-1][0]
    # The venv measured 55.5 MB; past 70 MB something unplanned (a dev tool, a cache) got in.
    assert venv < 70e6, megabytes(venv)
    assert sum(size for _, size in layers) <= image.size + 1e6


def test_runs_as_the_numeric_non_root_user_without_capabilities(
    podman: Podman, service: Container
) -> None:
    assert podman.exec(service.name, "id", "-u").strip() == str(USER[0])
    assert podman.exec(service.name, "id", "-g").strip() == str(USER[1])
    assert_no_privileges(proc_status(podman, service.name), *USER)


def test_no_pip_or_setuptools_in_the_runtime_venv(podman: Podman, service: Container) -> None:
    found = podman.exec(
        service.name,
        "python",
        "-c",
        "import importlib.util as u; "
        "print(' '.join(m for m in ('pip', 'setuptools', 'wheel', '_distutils_hack')"
        " if u.find_spec(m)))",
    )
    assert found.strip() == ""
    scripts = podman.exec(service.name, "ls", "/opt/venv/bin").split()
    assert "payments-client" in scripts
    assert not [script for script in scripts if script.startswith(("pip", "easy_install"))]


def test_healthcheck_passes_while_serving(podman: Podman, service: Container) -> None:
    check = podman.run("healthcheck", "run", service.name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    status = podman.run("inspect", "--format", "{{.State.Health.Status}}", service.name)
    assert status.stdout.strip() == "healthy"


def healthcheck_output(podman: Podman, container: str) -> str:
    (state,) = podman.json("container", "inspect", container)
    return str(state["State"]["Health"]["Log"][-1]["Output"])


def test_healthcheck_fails_when_the_service_does_not_answer(podman: Podman, image: Image) -> None:
    """Two ways a container can be up without the service: the server hangs (SIGSTOP), or
    it never started (the entrypoint replaced). The HEALTHCHECK must fail in both, and pass
    again once the hung server resumes."""
    hung = podman.name("hung")
    podman.run(*run_hardened(podman, "hung"), image.reference)
    deadline = time.monotonic() + 60
    while podman.run("healthcheck", "run", hung, check=False).returncode != 0:
        assert time.monotonic() < deadline, "the server never became healthy"
        time.sleep(0.2)
    pid = containers.container_pid(podman, hung)
    os.kill(pid, signal.SIGSTOP)
    try:
        check = podman.run("healthcheck", "run", hung, check=False)
        assert check.returncode == 1, check.stdout + check.stderr
        assert "DEADLINE_EXCEEDED" in healthcheck_output(podman, hung)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert podman.run("healthcheck", "run", hung, check=False).returncode == 0

    idle = podman.name("not-serving")
    command = run_hardened(podman, "not-serving", "--entrypoint", "/bin/sleep")
    podman.run(*command, image.reference, "120")
    check = podman.run("healthcheck", "run", idle, check=False)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "UNAVAILABLE" in healthcheck_output(podman, idle)
    podman.run("rm", "--force", "--time", "0", hung, idle)


def test_payment_round_trip_cli_inside_grpcurl_outside(podman: Podman, service: Container) -> None:
    key = f"image-{uuid.uuid4()}"
    cli = ["payments-client", "request", "--amount", "1250", "--currency", "USD"]
    created = json.loads(podman.exec(service.name, *cli, "--order", "image-order-1", "--key", key))
    payment_id = created["payment_id"]
    assert created["message"] == "Payment created"
    got = json.loads(podman.exec(service.name, "payments-client", "get", payment_id))
    assert (got["amount_minor"], got["currency"], got["order_id"]) == (
        "1250",
        "USD",
        "image-order-1",
    )

    grpcurl = require_tool("grpcurl")
    listed = subprocess.run(
        [grpcurl, "-plaintext", service.api, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "payments.v1.PaymentService" in listed.stdout.split()
    fetched = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-d",
            json.dumps({"payment_id": payment_id}),
            service.api,
            "payments.v1.PaymentService/GetPayment",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer = json.loads(fetched.stdout)
    assert (answer["payment_id"], answer["amount_minor"]) == (payment_id, "1250")


def payments_created(metrics: str, currency: str = "") -> float:
    """payments_total{outcome="created"} on ``metrics``' /metrics (one currency, or all)."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    series = re.findall(r"^payments_total\{([^}]*)\} (\S+)$", text, re.MULTILINE)
    return sum(
        float(value)
        for labels, value in series
        if 'outcome="created"' in labels and f'currency="{currency}' in labels
    )


def request_payment(target: str, order: str, currency: str = "USD") -> str:
    """One RequestPayment from the host, with a new idempotency key; the payment's id."""
    with grpc.insecure_channel(target) as channel:
        answer = payments_pb2_grpc.PaymentServiceStub(channel).RequestPayment(
            valid_request(amount_minor=990, currency=currency, order_id=order),
            timeout=10,
        )
    return str(answer.payment_id)


def test_metrics_answer_and_count_a_payment(service: Container) -> None:
    before = payments_created(service.metrics, "EUR")
    request_payment(service.api, "image-metrics", "EUR")
    assert payments_created(service.metrics, "EUR") == before + 1


def test_start_up_and_memory(
    podman: Podman, service: Container, request: pytest.FixtureRequest
) -> None:
    status = proc_status(podman, service.name)
    rss = int(status["VmRSS"].split()[0]) * 1024
    report(request, f"RSS of the server after a few calls: {megabytes(rss)}")
    assert service.startup_seconds < HEALTHCHECK_START_PERIOD
    assert rss < MEMORY_LIMIT / 2


def assert_graceful_stop(podman: Podman, container: str, stop: list[str], budget: float) -> float:
    """Run ``stop`` (a podman command that sends SIGTERM): the server must exit 0 within
    ``budget`` seconds, logging its shutdown lines in order. Returns the seconds it took."""
    started = time.monotonic()
    podman.run(*stop, timeout=120)
    elapsed = time.monotonic() - started
    exit_code = podman.run("inspect", "--format", "{{.State.ExitCode}}", container)
    assert exit_code.stdout.strip() == "0"
    assert elapsed < budget, f"stopping took {elapsed:.1f} s, budget {budget} s"
    logs = podman.run("logs", container)
    output = logs.stdout + logs.stderr
    positions = [output.find(line) for line in SHUTDOWN_LINES]
    assert -1 not in positions, output[-2000:]
    assert positions == sorted(positions), output[-2000:]
    return elapsed


def test_sigterm_exits_zero_within_the_grace_period_writing_only_tmp(
    podman: Podman, image: Image, service: Container, request: pytest.FixtureRequest
) -> None:
    grace = Settings.model_fields["grace_period_seconds"].default
    # SIGTERM, and SIGKILL only after 10 s; no call is in flight, so no need to wait the grace.
    stop = ["stop", "--time", "10", service.name]
    elapsed = assert_graceful_stop(podman, service.name, stop, budget=grace)
    report(request, f"podman stop: exit 0 after {elapsed:.2f} s (grace period {grace} s)")
    # Over its whole life (calls, health checks, shutdown) the server wrote nothing outside
    # /tmp: the container's changes are only the ones podman makes in any container.
    baseline = engine_baseline(podman, image)
    assert diff(podman, service.name) == baseline
    report(request, f"podman diff: {baseline} (the same for a container that ran nothing)")


# --- the chart's Deployment under podman kube play -------------------------------------------


@dataclass
class Pod:
    name: str
    container: str
    deployment: dict[str, Any]
    host_ports: dict[int, int]  # container port -> 127.0.0.1 port

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def main(self) -> dict[str, Any]:
        (main,) = [c for c in self.spec["containers"] if c["name"] == "payments-service"]
        container: dict[str, Any] = main
        return container


def for_podman(objects: list[dict[str, Any]], podman: Podman) -> tuple[list[Any], Pod]:
    """The rendered ConfigMap and Deployment, with what podman 4.3 lacks supplied.

    Returns the objects to play and the Pod it will make."""
    deployment = single_object(objects, "Deployment")
    name = deployment["metadata"]["name"]
    pod = Pod(f"{name}-pod-0", f"{name}-pod-0-payments-service", deployment, {})
    container = pod.main
    supplied = {"metadata.namespace": NAMESPACE, "spec.nodeName": socket.gethostname()}
    defined = {"POD_NAME": pod.name}  # what podman gives fieldRef metadata.name
    for variable in container["env"]:
        field = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field in supplied:
            del variable["valueFrom"]
            variable["value"] = supplied[field]
        if "value" in variable:  # $(VAR) references, expanded as the kubelet does
            variable["value"] = re.sub(
                r"\$\(([A-Za-z_]\w*)\)", lambda m: defined.get(m[1], m[0]), variable["value"]
            )
            defined[variable["name"]] = variable["value"]
    for port in container["ports"]:
        pod.host_ports[port["containerPort"]] = port["hostPort"] = free_port()
        port["hostIP"] = "127.0.0.1"
    for volume in pod.spec["volumes"]:
        if "emptyDir" in volume:
            renamed = f"{volume['name']}-{podman.token}"
            for mount in container["volumeMounts"]:
                if mount["name"] == volume["name"]:
                    mount["name"] = renamed
            volume["name"] = renamed
            podman.owned.append(("volume", renamed))
    return [*[o for o in objects if o["kind"] == "ConfigMap"], deployment], pod


@pytest.fixture(scope="module")
def pod(podman: Podman, image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    repository, _, tag = image.reference.rpartition(":")
    values = {"image": {"repository": repository, "tag": tag}, "podLabels": {LABEL: podman.token}}
    objects = manifests(render(values, release=f"{RELEASE}-{podman.token}"), with_tests=False)
    played, pod = for_podman(objects, podman)
    kube = tmp_path_factory.mktemp("kube") / "deployment.yaml"
    kube.write_text(yaml.safe_dump_all(played))
    network = podman.name("kube")  # else podman makes (and keeps) a default kube network
    podman.run("network", "create", "--label", podman.label, network)
    try:
        podman.run("kube", "play", "--network", network, str(kube), timeout=180)
        yield pod
    finally:
        podman.run("kube", "down", str(kube), check=False, timeout=180)


def probe_target(pod: Pod, probe: dict[str, Any]) -> str:
    return f"127.0.0.1:{pod.host_ports[probe['grpc']['port']]}"


def test_the_charts_deployment_under_podman_kube_play(
    podman: Podman, pod: Pod, request: pytest.FixtureRequest
) -> None:
    """The Deployment rendered with the chart's default values (plus the test image and a
    label) runs under ``podman kube play`` (podman 4.3) with its security context intact,
    and answers the probes the chart declares on the ports they name.

    What podman does with the Deployment, and how this test supplies what it drops:

    - env ``fieldRef`` ``metadata.namespace`` and ``spec.nodeName``: rejected ("fieldPath
      ... is either not valid or not supported"): given as plain values (the release's
      namespace, this machine's host name). ``metadata.name`` is honoured (the pod's name).
    - ``$(VAR)`` references in env values: passed on unexpanded: expanded here as the
      kubelet does.
    - gRPC ``startupProbe``, ``livenessProbe``, ``readinessProbe``: ignored (no health
      check at all; the image's HEALTHCHECK is not used either): the test sends each
      probe's grpc.health.v1 Check itself to the port it names, with its timeoutSeconds.
    - ``runAsNonRoot``: ignored (runAsUser 0 would run as root): the test checks the uid
      and gid inside are runAsUser and runAsGroup, not 0.
    - ``terminationGracePeriodSeconds``: ignored (podman's stop timeout stays 10 s) and
      ``lifecycle.preStop``: not run: the test stops the pod with ``--time`` set to the
      grace period and requires exit 0 within what is left of it after the preStop pause.
    - Service, ServiceAccount: not played: only the ConfigMap and the Deployment are given.
      A containerPort without hostPort is published on every host interface under its own
      number (a kubelet publishes none), so each port gets hostIP 127.0.0.1 and a free
      hostPort, which the test uses where the Service would be.
    - ``emptyDir``: becomes a podman volume named after the pod volume (``tmp``, shared
      with anything else of that name; fsGroup is not applied): renamed per test session.
    - Honoured: command, envFrom the ConfigMap, runAsUser/runAsGroup,
      readOnlyRootFilesystem, capabilities drop ALL, allowPrivilegeEscalation false
      (no_new_privs), seccomp RuntimeDefault, the memory and CPU limits.
    """
    main = pod.main
    context = {**pod.spec["securityContext"], **main["securityContext"]}
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = main[name]
        target = probe_target(pod, probe)
        service = probe["grpc"].get("service", "")
        wait_serving(
            target,
            time.monotonic(),
            service,
            timeout=probe["failureThreshold"] * probe["periodSeconds"],
        )
        assert health(target, service, timeout=probe["timeoutSeconds"]) == "SERVING", name
    report(request, "kube play: startup, liveness and readiness probes answer SERVING")

    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] != 0
    assert_no_privileges(
        proc_status(podman, pod.container), context["runAsUser"], context["runAsGroup"]
    )
    status = proc_status(podman, pod.container)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    assert context["readOnlyRootFilesystem"] is True
    assert_read_only_root(podman, pod.container)
    (inspect,) = podman.json("container", "inspect", pod.container)
    limit = re.fullmatch(r"(\d+)([KMG])i", main["resources"]["limits"]["memory"])
    assert limit, main["resources"]["limits"]["memory"]
    assert inspect["HostConfig"]["Memory"] == int(limit[1]) * 1024 ** " KMG".index(limit[2])
    environment = dict(item.split("=", 1) for item in inspect["Config"]["Env"])
    assert environment["POD_NAME"] == pod.name
    assert "$(" not in environment["OTEL_RESOURCE_ATTRIBUTES"]

    (api,) = [p["containerPort"] for p in main["ports"] if p["name"] == "grpc"]
    payment_id = request_payment(f"127.0.0.1:{pod.host_ports[api]}", "kube-play")
    assert str(uuid.UUID(payment_id)) == payment_id

    # SIGTERM: the kubelet would pause preStop first, then allow what is left of the grace.
    pause = main.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    budget = pod.spec["terminationGracePeriodSeconds"] - pause
    grace = str(pod.spec["terminationGracePeriodSeconds"])
    stop = ["pod", "stop", "--time", grace, pod.name]
    elapsed = assert_graceful_stop(podman, pod.container, stop, budget)
    report(request, f"kube play: pod stopped, exit 0 after {elapsed:.2f} s (budget {budget} s)")


# --- docker-compose.yml under podman-compose -------------------------------------------------


def test_compose_service_and_test_client_under_podman_compose(
    podman: Podman, image: Image, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """docker-compose.yml's payment-service and its test-client profile, run by podman-compose
    on the image built above. Jaeger and Prometheus are left out: their images cannot be
    pulled here. An override file (compose's own merge) points both services at the test
    image, publishes the ports on 127.0.0.1 only (free ports), drops the fixed
    container_name and the dependency on Jaeger; spans the service tries to send to
    jaeger:4317 are lost, which must not hurt serving. ``--in-pod false``: one container per
    service, as with Docker. podman-compose ignores ``condition: service_healthy`` with
    podman 4.3, so the test runs the HEALTHCHECK itself first. Every podman-compose call
    runs under ``timeout``, so that a hung one cannot stall the suite.
    """
    compose = require_tool("podman-compose")
    api, metrics = free_port(), free_port()
    override = tmp_path / "override.yml"
    override.write_text(f"""\
services:
  payment-service:
    image: {image.reference}
    container_name: !reset null
    ports: !override
      - "127.0.0.1:{api}:7000"
      - "127.0.0.1:{metrics}:9464"
    depends_on: !reset []
  test-client:
    image: {image.reference}
""")
    empty_env = tmp_path / "empty.env"  # no .env of the developer's changes the ports
    empty_env.write_text("")
    project = podman.name("compose")
    env = {k: v for k, v in podman.env.items() if k not in {"PORT", "MAX_WORKERS"}}

    def podman_compose(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        command = [
            "timeout",
            "--kill-after=10",
            str(timeout),
            compose,
            "--in-pod",
            "false",  # one container per service on the project's network, as with Docker
            "--project-name",
            project,
            "--env-file",
            str(empty_env),
            "--file",
            str(ROOT / "docker-compose.yml"),
            "--file",
            str(override),
            "--profile",
            "test",
            *args,
        ]
        return subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout + 30,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    service = f"{project}_payment-service_1"
    podman.owned.append(("network", f"{project}_default"))
    try:
        up = podman_compose("up", "--detach", "--no-build", "payment-service")
        assert up.returncode == 0, up.stdout + up.stderr
        deadline = time.monotonic() + 60
        while podman.run("healthcheck", "run", service, check=False).returncode != 0:
            assert time.monotonic() < deadline, "payment-service never became healthy"
            time.sleep(0.2)
        (inspect,) = podman.json("container", "inspect", service)
        host = inspect["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert "/tmp" in host["Tmpfs"]
        assert "no-new-privileges" in " ".join(host["SecurityOpt"])
        assert_no_privileges(proc_status(podman, service), *USER)

        client = podman_compose("run", "--rm", "--no-deps", "test-client")
        assert client.returncode == 0, client.stdout + client.stderr
        answers = [
            json.loads(block)
            for block in re.findall(r"^\{.*?^\}", client.stdout, re.MULTILINE | re.DOTALL)
        ]
        health_answer, first, replay = answers
        assert health_answer == {"status": "SERVING"}
        assert first["payment_id"] == replay["payment_id"]
        assert "replay" in replay["message"]
        with grpc.insecure_channel(f"127.0.0.1:{api}") as channel:
            stored = payments_pb2_grpc.PaymentServiceStub(channel).GetPayment(
                payments_pb2.GetPaymentRequest(payment_id=first["payment_id"]), timeout=10
            )
        assert stored.order_id == "compose-order-1"
        assert payments_created(f"127.0.0.1:{metrics}") == 1

        started = time.monotonic()
        stop = podman_compose("stop")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        elapsed = time.monotonic() - started
        report(request, f"podman-compose stop: {elapsed:.1f} s (spans for jaeger are retried)")
        exit_code = podman.run("inspect", "--format", "{{.State.ExitCode}}", service)
        assert exit_code.stdout.strip() == "0"
    finally:
        down = podman_compose("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not podman.exists("container", service)
