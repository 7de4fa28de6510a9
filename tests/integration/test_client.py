"""The payments-client CLI as users run it: a real process against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from tests.conftest import RunningServer


def client(server_port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "payments_service.client",
            "--target",
            f"127.0.0.1:{server_port}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_health_prints_serving_and_exits_0(server: RunningServer) -> None:
    result = client(server.port, "health")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}
    ready = client(server.port, "health", "--service", "payments.v1.PaymentService")
    assert ready.returncode == 0


def test_health_exits_3_when_not_serving(server: RunningServer) -> None:
    server.enter_graceful_shutdown()
    result = client(server.port, "health")
    assert result.returncode == 3
    assert json.loads(result.stdout) == {"status": "NOT_SERVING"}


def test_request_then_get_round_trip_with_replay(server: RunningServer) -> None:
    key = f"cli-{uuid.uuid4()}"
    args = (
        "request",
        "--amount",
        "1250",
        "--currency",
        "USD",
        "--order",
        "order-123",
        "--key",
        key,
        "--meta",
        "user_id=user-789",
        "--meta",
        "note=a=b",
    )
    created = client(server.port, *args)
    assert created.returncode == 0, created.stderr
    response = json.loads(created.stdout)
    assert response["status"] == "PAYMENT_STATUS_PENDING"
    replay = json.loads(client(server.port, *args).stdout)
    assert replay["payment_id"] == response["payment_id"]
    assert "replay" in replay["message"]

    shown = client(server.port, "get", response["payment_id"])
    assert shown.returncode == 0, shown.stderr
    payment = json.loads(shown.stdout)
    assert payment["metadata"] == {"user_id": "user-789", "note": "a=b"}
    assert payment["amount_minor"] == "1250"


def test_request_without_key_generates_one(server: RunningServer) -> None:
    args = ("request", "--amount", "5", "--currency", "EUR", "--order", "o-1")
    first = json.loads(client(server.port, *args).stdout)
    second = json.loads(client(server.port, *args).stdout)
    assert first["payment_id"] != second["payment_id"]


def test_errors_show_code_message_and_field_violations(server: RunningServer) -> None:
    result = client(
        server.port, "request", "--amount", "0", "--currency", "usd", "--order", "o", "--key", "k"
    )
    assert result.returncode == 1
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["reason"] == "INVALID_REQUEST"
    assert [v["field"] for v in error["field_violations"]] == [
        "amount_minor",
        "currency",
        "idempotency_key",
    ]

    missing = client(server.port, "get", str(uuid.uuid4()))
    assert missing.returncode == 1
    assert json.loads(missing.stderr)["error"]["code"] == "NOT_FOUND"


def test_unreachable_server_is_a_clean_error() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "payments_service.client",
            "--target",
            "127.0.0.1:1",
            "--timeout",
            "1",
            "health",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert json.loads(result.stderr)["error"]["code"] == "UNAVAILABLE"
    assert "Traceback" not in result.stderr


def test_bad_usage_exits_2() -> None:
    result = client(1, "request", "--amount", "ten", "--currency", "USD", "--order", "o")
    assert result.returncode == 2
    assert "invalid int value" in result.stderr
