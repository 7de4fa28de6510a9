"""The real grpcurl binary against a real server, with no proto files (reflection only)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable

import pytest

from tests.support.environment import require_tool
from tests.support.servers import RunningServer

pytestmark = pytest.mark.tools

Grpcurl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def grpcurl(server: RunningServer) -> Grpcurl:
    """Runs grpcurl -plaintext against the test server: grpcurl(*args, data=None)."""
    binary = require_tool("grpcurl")

    def run(*args: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [binary, "-plaintext"]
        if data is not None:
            command += ["-d", data]
        command += [f"127.0.0.1:{server.port}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    return run


def test_list_shows_the_api_health_and_reflection(grpcurl: Grpcurl) -> None:
    result = grpcurl("list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "payments.v1.PaymentService",
    ]


def test_describe_shows_both_reflection_versions(grpcurl: Grpcurl) -> None:
    for version in ("v1", "v1alpha"):
        result = grpcurl("describe", f"grpc.reflection.{version}.ServerReflection")
        assert result.returncode == 0, result.stderr
        package = f".grpc.reflection.{version}"
        assert (
            f"rpc ServerReflectionInfo ( stream {package}.ServerReflectionRequest )"
            f" returns ( stream {package}.ServerReflectionResponse );"
        ) in result.stdout


def test_describe_shows_the_documented_methods(grpcurl: Grpcurl) -> None:
    result = grpcurl("describe", "payments.v1.PaymentService")
    assert result.returncode == 0, result.stderr
    for method in ("RequestPayment", "GetPayment", "Health"):
        assert f"rpc {method}" in result.stdout
    message = grpcurl("describe", "payments.v1.RequestPaymentRequest")
    assert "int64 amount_minor = 1;" in message.stdout
    assert "map<string, string> metadata = 5;" in message.stdout


def test_the_seed_grpcurl_commands_work_verbatim(grpcurl: Grpcurl) -> None:
    # The seed's three commands, with only the address changed to the test server's.
    health = grpcurl("payments.v1.PaymentService/Health")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}

    created = grpcurl(
        "payments.v1.PaymentService/RequestPayment",
        data="""{
  "amount_minor": 1250,
  "currency": "USD",
  "order_id": "order-123",
  "idempotency_key": "test-key-12345678"
}""",
    )
    assert created.returncode == 0, created.stderr
    answer = json.loads(created.stdout)
    assert str(uuid.UUID(answer["payment_id"])) == answer["payment_id"]
    assert answer["status"] == "PAYMENT_STATUS_PENDING"

    missing = grpcurl(
        "payments.v1.PaymentService/GetPayment",
        data="""{
  "payment_id": "550e8400-e29b-41d4-a716-446655440000"
}""",
    )
    assert missing.returncode != 0
    assert "Code: NotFound" in missing.stderr

    found = grpcurl(
        "payments.v1.PaymentService/GetPayment",
        data=json.dumps({"payment_id": answer["payment_id"]}),
    )
    assert found.returncode == 0, found.stderr
    payment = json.loads(found.stdout)
    assert payment["amount_minor"] == "1250"  # int64 is a string in proto JSON
    assert payment["order_id"] == "order-123"


def test_grpcurl_prints_the_field_violations(grpcurl: Grpcurl) -> None:
    result = grpcurl(
        "payments.v1.PaymentService/RequestPayment",
        data='{"amount_minor": 0, "currency": "usd", "order_id": "o", "idempotency_key": "k"}',
    )
    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr
    assert "type.googleapis.com/google.rpc.BadRequest" in result.stderr
    for field in ("amount_minor", "currency", "idempotency_key"):
        assert f'"field":"{field}"' in result.stderr.replace(" ", "")


def test_standard_health_check_by_service_name(grpcurl: Grpcurl) -> None:
    result = grpcurl(
        "grpc.health.v1.Health/Check", data='{"service": "payments.v1.PaymentService"}'
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}
