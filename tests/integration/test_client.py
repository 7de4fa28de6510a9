"""The payments-client CLI as users run it: a real process against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from payments_service import __version__
from tests.support.certificates import CertificateAuthority, Issued
from tests.support.servers import RunningServer, ServerFactory, start_tls_server


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


def test_health_of_a_service_the_server_does_not_know_says_so(server: RunningServer) -> None:
    result = client(server.port, "health", "--service", "foo")
    assert result.returncode == 1
    assert json.loads(result.stderr)["error"] == {
        "code": "NOT_FOUND",
        "message": "unknown service",
    }


def test_version_is_the_installed_version() -> None:
    for program in ("payments_service.client", "payments_service"):
        result = subprocess.run(
            [sys.executable, "-m", program, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert result.stdout.split()[1:] == [__version__]
    assert __version__ == "0.1.0"


def _request(key: str) -> tuple[str, ...]:
    return ("request", "--amount", "700", "--currency", "EUR", "--order", "o-tls", "--key", key)


def _code(result: subprocess.CompletedProcess[str]) -> str:
    """The code of a failed call (gRPC core may log a failed handshake before the JSON)."""
    assert result.returncode == 1, result.stdout
    return str(json.loads(result.stderr[result.stderr.index("{") :])["error"]["code"])


def test_tls_with_the_servers_ca_and_not_in_plaintext(
    server_factory: ServerFactory, authority: CertificateAuthority, server_certificate: Issued
) -> None:
    app = start_tls_server(server_factory, server_certificate)
    ca = ("--ca", str(authority.file))

    assert json.loads(client(app.port, *ca, "health").stdout) == {"status": "SERVING"}
    created = client(app.port, *ca, *_request("tls-key-0001"))
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["message"] == "Payment created"
    # Plaintext, and TLS trusting only the system's CAs, do not get through.
    assert _code(client(app.port, "health")) == "UNAVAILABLE"
    assert _code(client(app.port, "--tls", "health")) == "UNAVAILABLE"
    assert app.count() == 1


def test_mutual_tls_with_a_client_certificate_and_key(
    server_factory: ServerFactory, authority: CertificateAuthority, server_certificate: Issued
) -> None:
    app = start_tls_server(server_factory, server_certificate, tls_client_ca_file=authority.file)
    issued = authority.issue("payments-client", server=False)
    ca = ("--ca", str(authority.file))
    mtls = (*ca, "--cert", str(issued.certificate_file), "--key", str(issued.key_file))

    # The TLS --key before the command, the idempotency --key after it.
    created = client(app.port, *mtls, *_request("mtls-key-0001"))
    assert created.returncode == 0, created.stderr
    shown = client(app.port, *mtls, "get", json.loads(created.stdout)["payment_id"])
    assert json.loads(shown.stdout)["order_id"] == "o-tls"
    assert _code(client(app.port, *ca, *_request("mtls-key-0002"))) == "UNAVAILABLE"
    assert app.count() == 1


def test_authority_names_the_server_its_certificate_was_issued_for(
    server_factory: ServerFactory, authority: CertificateAuthority
) -> None:
    certificate = authority.issue("payments-internal", server=True, hosts=["payments.internal"])
    app = start_tls_server(server_factory, certificate)
    ca = ("--ca", str(authority.file))

    assert _code(client(app.port, *ca, "health")) == "UNAVAILABLE"  # 127.0.0.1 is not in it
    named = client(app.port, *ca, "--authority", "payments.internal", "health")
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout) == {"status": "SERVING"}


def test_tls_files_are_checked_before_any_call(tmp_path: Path) -> None:
    alone = client(1, "--cert", str(tmp_path / "missing.pem"), "health")
    assert alone.returncode == 2
    assert "cannot read" in alone.stderr
    readable = tmp_path / "client.pem"
    readable.write_text("not used")
    without_key = client(1, "--cert", str(readable), "health")
    assert without_key.returncode == 2
    assert "--cert and --key go together" in without_key.stderr


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
