"""Hardening settings are hostile input too: every bad value -> one readable line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from payments_service.server import main
from tests.support.certificates import CertificateAuthority

GARBAGE = "not a certificate\n"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Paths to a valid CA, server certificate and key, another key, and a garbage file."""
    authority = CertificateAuthority(tmp_path)
    server = authority.issue("server", server=True)
    other = authority.issue("other", server=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text(GARBAGE)
    return {
        "ca": str(authority.file),
        "cert": str(server.certificate_file),
        "key": str(server.key_file),
        "other_key": str(other.key_file),
        "garbage": str(garbage),
        "missing": str(tmp_path / "missing.pem"),
    }


CASES = {
    "size not a number": ({"MAX_RECEIVE_MESSAGE_BYTES": "64k"}, "MAX_RECEIVE_MESSAGE_BYTES"),
    "size too small": ({"MAX_RECEIVE_MESSAGE_BYTES": "10"}, "MAX_RECEIVE_MESSAGE_BYTES"),
    "negative cap": ({"MAX_CONCURRENT_RPCS": "-1"}, "MAX_CONCURRENT_RPCS"),
    "zero keepalive": ({"KEEPALIVE_TIME_SECONDS": "0"}, "KEEPALIVE_TIME_SECONDS"),
    "keepalive timeout word": ({"KEEPALIVE_TIMEOUT_SECONDS": "soon"}, "KEEPALIVE_TIMEOUT_SECONDS"),
    "negative age": ({"MAX_CONNECTION_AGE_SECONDS": "-5"}, "MAX_CONNECTION_AGE_SECONDS"),
    "grace word": ({"MAX_CONNECTION_AGE_GRACE_SECONDS": "x"}, "MAX_CONNECTION_AGE_GRACE_SECONDS"),
    "health port range": ({"HEALTH_PORT": "70000"}, "HEALTH_PORT"),
    "health port = port": ({"HEALTH_PORT": "7100", "PORT": "7100"}, "HEALTH_PORT"),
    "health port = metrics port": ({"HEALTH_PORT": "9464", "METRICS_PORT": "9464"}, "HEALTH_PORT"),
    "metrics port = port": ({"METRICS_PORT": "7100", "PORT": "7100"}, "METRICS_PORT"),
    "cert without key": ({"TLS_CERT_FILE": "{cert}"}, "TLS_KEY_FILE"),
    "key without cert": ({"TLS_KEY_FILE": "{key}"}, "TLS_KEY_FILE"),
    "missing cert": ({"TLS_CERT_FILE": "{missing}", "TLS_KEY_FILE": "{key}"}, "TLS_CERT_FILE"),
    "garbage cert": ({"TLS_CERT_FILE": "{garbage}", "TLS_KEY_FILE": "{key}"}, "TLS_KEY_FILE"),
    "key of another cert": (
        {"TLS_CERT_FILE": "{cert}", "TLS_KEY_FILE": "{other_key}"},
        "TLS_KEY_FILE",
    ),
    "client CA without TLS": ({"TLS_CLIENT_CA_FILE": "{ca}"}, "TLS_CLIENT_CA_FILE"),
    "garbage client CA": (
        {"TLS_CERT_FILE": "{cert}", "TLS_KEY_FILE": "{key}", "TLS_CLIENT_CA_FILE": "{garbage}"},
        "TLS_CLIENT_CA_FILE",
    ),
}


@pytest.mark.parametrize(("env", "variable"), list(CASES.values()), ids=list(CASES))
def test_a_bad_hardening_setting_stops_with_one_line_naming_it_and_exit_2(
    env: dict[str, str],
    variable: str,
    files: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**files))

    assert main([]) == 2

    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert error.startswith("payments-service: invalid configuration: ")
    assert f"{variable}=" in error
    assert GARBAGE.strip() not in error  # file contents (a key!) are never echoed
