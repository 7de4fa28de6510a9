"""The real process: start-up, the seed's client example, graceful shutdown, bad config."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments_service import payments_pb2_grpc
from payments_service.config import Settings, default_value
from tests.support.environment import ROOT
from tests.support.network import free_port, wait_for_port
from tests.support.processes import start_server_process, wait_for_health
from tests.support.requests import valid_request

SERVING = health_pb2.HealthCheckResponse.SERVING
SEED_EXAMPLE = ROOT / "tests" / "integration" / "seed_client_example.py"


def _stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    process.send_signal(sig)
    output, _ = process.communicate(timeout=20)
    return process.returncode, output


#: The server's log as the original specification shows it ("Server Output" and "Graceful
#: Shutdown"), without the timestamps: every line the payments_service.server logger writes
#: when the service starts with the default settings and stops on Ctrl+C, in this order.
SEED_SERVER_LINES = """\
payments_service.server - INFO - PaymentServer initialized (port=7000, workers=10)
payments_service.server - INFO - Starting payment microservice...
payments_service.server - INFO - Creating InMemoryPaymentRepository...
payments_service.server - INFO - Creating PaymentService...
payments_service.server - INFO - Creating PaymentServiceGrpcServicer...
payments_service.server - INFO - Creating gRPC server with 10 workers...
payments_service.server - INFO - Adding PaymentService servicer to server...
payments_service.server - INFO - Server bound to [::]:7000
payments_service.server - INFO - ✓ Payment microservice started successfully on port 7000
payments_service.server - INFO - Server is ready to accept requests
payments_service.server - INFO - Received signal SIGINT, initiating shutdown...
payments_service.server - INFO - Stopping server (grace period: 5s)...
payments_service.server - INFO - ✓ Server stopped successfully
"""
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - ")


@pytest.mark.parametrize(
    "args",
    [
        ("-m", "payments_service.server"),
        ("-m", "payments_service"),
        ("-m", "payments_service", "serve"),
    ],
    ids=" ".join,
)
def test_server_logs_the_seeds_lines_and_stops_on_sigint(args: tuple[str, ...]) -> None:
    port = free_port()
    process = start_server_process({"PORT": str(port)}, args=args)
    try:
        wait_for_health(port, SERVING, timeout=20, service="")  # then every start line is out
    finally:
        code, output = _stop(process, signal.SIGINT)
    assert code == 0, output
    server_lines = [
        TIMESTAMP.sub("", line)
        for line in output.splitlines()
        if TIMESTAMP.match(line) and " - payments_service.server - " in line
    ]
    expected = SEED_SERVER_LINES.replace("7000", str(port)).splitlines()
    assert server_lines == expected, output


def test_the_seed_python_example_runs_verbatim() -> None:
    # The seed's example talks to localhost:7000, so this test needs that port.
    process = start_server_process({"PORT": "7000", "HOST": "127.0.0.1"})
    try:
        wait_for_port(7000)
        result = subprocess.run(
            [sys.executable, str(SEED_EXAMPLE)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        _stop(process)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Payment ID: ")
    payment_id = lines[0].removeprefix("Payment ID: ")
    assert str(uuid.UUID(payment_id)) == payment_id
    assert lines[1:] == [
        "Status: 1",
        "Message: Payment created",
        "Amount: $12.50",
        "Currency: USD",
        "Health: SERVING",
    ]


def test_sigterm_lets_calls_in_flight_finish_and_refuses_new_ones() -> None:
    port = free_port()
    # One worker and many callers: most calls wait inside the server at any moment.
    process = start_server_process(
        {"PORT": str(port), "MAX_WORKERS": "1", "GRACE_PERIOD_SECONDS": "10"}
    )
    wait_for_port(port)
    results: list[tuple[float, float, grpc.StatusCode]] = []
    lock = threading.Lock()
    stop = threading.Event()
    health_after_sigterm: list[int] = []

    def caller(channel: grpc.Channel) -> None:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        while not stop.is_set():
            started = time.monotonic()
            request = valid_request(metadata={f"k{i}": "x" * 400 for i in range(50)})
            try:
                stub.RequestPayment(request, timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
            with lock:
                results.append((started, time.monotonic(), code))
            if code != grpc.StatusCode.OK:
                return

    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(4)]
    threads = [threading.Thread(target=caller, args=(channels[i % 4],)) for i in range(40)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    sigterm_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    # Drain the server's output meanwhile, or a full pipe would stall its logging.
    outputs: list[str] = []
    drain = threading.Thread(target=lambda: outputs.append(process.communicate(timeout=30)[0]))
    drain.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as probe:
        try:
            answer = health_pb2_grpc.HealthStub(probe).Check(
                health_pb2.HealthCheckRequest(service="payments.v1.PaymentService"), timeout=2
            )
            health_after_sigterm.append(answer.status)
        except grpc.RpcError:
            health_after_sigterm.append(-1)  # already refusing connections: also not serving
    drain.join(timeout=30)
    output = outputs[0]
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    for channel in channels:
        channel.close()

    assert process.returncode == 0, output
    assert "✓ Server stopped successfully" in output
    assert health_after_sigterm != [health_pb2.HealthCheckResponse.SERVING]
    in_flight = [r for r in results if r[0] < sigterm_at < r[1]]
    before = [r for r in results if r[1] < sigterm_at]
    assert before
    assert all(code == grpc.StatusCode.OK for _, _, code in before)
    # Every call the clients had sent when SIGTERM came was completed, none cancelled:
    # with one worker slot, most of them were waiting their turn in the server.
    assert len(in_flight) >= len(threads) // 2, results[-50:]
    assert {code for _, _, code in in_flight} == {grpc.StatusCode.OK}
    # ... and calls that came after it were served or refused with a code clients retry.
    late_codes = {code for started, _, code in results if started > sigterm_at}
    assert late_codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert {code for started, _, code in results if started < sigterm_at} <= {grpc.StatusCode.OK}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PORT": "abc"}, "PORT='abc': Input should be a valid integer"),
        ({"PORT": "70000"}, "PORT='70000': Input should be less than or equal to 65535"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL="),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml': Input should be 'text' or 'json'"),
        ({"MAX_WORKERS": "0"}, "MAX_WORKERS='0': Input should be greater than or equal to 1"),
        ({"GRACE_PERIOD_SECONDS": "-1"}, "GRACE_PERIOD_SECONDS='-1'"),
        ({"REFLECTION_ENABLED": "maybe"}, "REFLECTION_ENABLED='maybe'"),
    ],
)
def test_bad_configuration_exits_2_with_one_readable_line(
    env: dict[str, str], expected: str
) -> None:
    process = start_server_process(env)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 2
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("payments-service: invalid configuration: ")
    assert expected in output


def test_a_port_another_instance_holds_is_named_with_its_setting_and_exit_2() -> None:
    """A second instance started beside a running one (the first one's PORT, METRICS_PORT
    or HEALTH_PORT left at the same value) stops with one ERROR line naming the port and
    its setting, and exit status 2, like every configuration error."""
    ports = {"PORT": free_port(), "METRICS_PORT": free_port(), "HEALTH_PORT": free_port()}
    first = start_server_process({name: str(port) for name, port in ports.items()})
    outputs = {}
    try:
        wait_for_health(ports["PORT"], SERVING, timeout=20, service="")
        for shared in ports:
            others = {name: str(free_port()) for name in ports if name != shared}
            second = start_server_process({shared: str(ports[shared]), **others})
            output, _ = second.communicate(timeout=20)
            outputs[shared] = (second.returncode, output)
    finally:
        _stop(first)
    for setting, (code, output) in outputs.items():
        assert code == 2, output
        error_lines = [line for line in output.splitlines() if " - ERROR - " in line]
        assert len(error_lines) == 1, output
        assert f"{setting}={ports[setting]}: cannot listen on" in error_lines[0]
        assert f"choose another {setting}" in error_lines[0]
        assert "Traceback" not in output


def test_help_lists_every_setting_with_its_default() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "payments_service", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert "names are case-insensitive" in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    for name in Settings.model_fields:
        assert lines[name.upper()].endswith(f"(default: {default_value(name) or 'unset'})")
    assert lines["OTEL_TRACES_SAMPLER_ARG"].endswith("(default: 1.0)")
    assert lines["REFLECTION_ENABLED"].endswith("(default: true)")


def test_seed_example_file_is_the_seed_text() -> None:
    # Guard against the example being "fixed" to fit the server.
    text = Path(SEED_EXAMPLE).read_text()
    assert "channel = grpc.insecure_channel('localhost:7000')" in text
    assert 'idempotency_key="unique-key-12345678"' in text
