"""What reaches the output: never the database password, never the bytes of a client's
headers.

The password: a DATABASE_URL that cannot be used (a password with an unencoded ``%`` or
``@``, an unquoted space in the keyword form, an unknown option, a bad ``sslmode``) stops
``python -m payments_service`` and ``... migrate`` with exit status 2 and one readable
line on stderr naming DATABASE_URL and what is wrong: no traceback, and no part of the
password anywhere in the output.

The headers: calls carrying a malformed ``baggage`` (and ``tracestate``) header with a
newline, ANSI escapes and a marker, ~350 bytes of it, are sent over a hand-written HTTP/2
connection (grpcio refuses to send such bytes; an attacker's client does not). In text and
JSON logs, with and without an OTLP endpoint: the marker appears nowhere, text logs hold
no raw control character and no forged line, and the log grows by about as much per call
as for a clean call (at the default LOG_LEVEL=INFO), so nobody can multiply log lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from payments_service import payments_pb2
from tests.support.environment import ROOT
from tests.support.h2_attacker import Connection, connected, grpc_message
from tests.support.network import free_port, wait_for_port
from tests.support.otlp_receiver import running_receiver
from tests.support.processes import CapturedServer
from tests.support.requests import valid_request

# -- the database password -----------------------------------------------------------------

PASSWORD = "Qx7vK9wR2tLp"  # noqa: S105 (a marker to look for in the output, not a credential)
PERCENT_PASSWORD = "Qx%zzJ7vK9wR"  # noqa: S105 ("%zz" is no percent-encoding)
AT_PASSWORD = "Qx7v@K9wR2tLp"  # noqa: S105 (an unencoded "@" ends the user info early)
SPACE_PASSWORD = "Qx7v K9wR2tLp"  # noqa: S105 (unquoted, the keyword form splits it)
PASSWORD_FRAGMENT_LENGTH = 4  # no run of this many characters of the password may appear
EXIT_WITHIN_SECONDS = 5.0  # a configuration error is reported at start, not after retries
CONFIGURATION_ERROR_STATUS = 2

#: (test id, DATABASE_URL, its password, words of which the line must hold one)
BAD_URLS = [
    (
        "unencoded-percent",
        f"postgresql://payments:{PERCENT_PASSWORD}@127.0.0.1:5432/test",
        PERCENT_PASSWORD,
        ("percent", "encod", "%"),
    ),
    (
        "unencoded-at",
        f"postgresql://payments:{AT_PASSWORD}@127.0.0.1:5432/test",
        AT_PASSWORD,
        ("@", "encod"),
    ),
    (
        "unknown-uri-option",
        f"postgresql://payments:{PASSWORD}@127.0.0.1:5432/test?frobnicate=1",
        PASSWORD,
        ("option",),  # naming it is fine, and so is not naming it
    ),
    (
        "unknown-keyword-option",
        f"host=127.0.0.1 dbname=test user=payments password={PASSWORD} frobnicate=1",
        PASSWORD,
        ("option",),  # naming it is fine, and so is not naming it
    ),
    (
        "unquoted-space-in-keyword-password",
        f"host=127.0.0.1 dbname=test user=payments password={SPACE_PASSWORD}",
        SPACE_PASSWORD,
        ("=", "quot", "syntax", "url"),
    ),
    (
        "bad-sslmode",
        f"postgresql://payments:{PASSWORD}@127.0.0.1:5432/test?sslmode=sometimes",
        PASSWORD,
        ("sslmode",),
    ),
]


def _fragments(password: str) -> set[str]:
    n = PASSWORD_FRAGMENT_LENGTH
    return {password[i : i + n] for i in range(len(password) - n + 1)}


def _run_service(env: dict[str, str], *args: str) -> tuple[int | None, str, str, float]:
    """Run ``python -m payments_service ARGS`` to its end (killed after the limit):
    exit status (None when killed), stdout, stderr, seconds."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DATABASE"))}
    full_env.update({"METRICS_PORT": "0", "HOST": "127.0.0.1", "PORT": str(free_port()), **env})
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "payments_service", *args],
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = process.communicate(timeout=EXIT_WITHIN_SECONDS)
        status: int | None = process.returncode
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        status = None
    seconds = time.monotonic() - started
    return status, out.decode(errors="replace"), err.decode(errors="replace"), seconds


@pytest.mark.parametrize("command", [(), ("migrate",)], ids=["serve", "migrate"])
@pytest.mark.parametrize(
    ("url", "password", "what"),
    [case[1:] for case in BAD_URLS],
    ids=[case[0] for case in BAD_URLS],
)
def test_a_bad_database_url_stops_with_one_line_and_never_the_password(
    command: tuple[str, ...], url: str, password: str, what: tuple[str, ...]
) -> None:
    status, out, err, seconds = _run_service(
        {"STORAGE_BACKEND": "postgres", "DATABASE_URL": url}, *command
    )
    lines = err.strip().splitlines()
    leaked = sorted(f for f in _fragments(password) if f in out + err)
    summary = (
        f"exit {status} after {seconds:.1f} s (None: still running, killed), "
        f"{len(lines)} line(s) on stderr, {len(out.splitlines())} on stdout, "
        f"password fragments printed: {leaked}, traceback: {'Traceback' in err}; "
        f"first line: {lines[:1]}"
    )
    print(f"\n{summary}")
    assert leaked == [], summary
    assert "Traceback" not in out + err, summary
    assert status == CONFIGURATION_ERROR_STATUS, summary
    assert len(lines) == 1, f"{summary}\n{err[-2000:]}"
    assert "DATABASE_URL" in lines[0], summary
    assert any(word in lines[0].lower() for word in what), summary


# -- client headers ------------------------------------------------------------------------

CALLS = 40  # per phase: clean calls first, then the same number with the hostile headers
MARKER = "HdrMarker5e2a"
FORGED_LINE = (
    "2026-01-01 00:00:00,000 - payments_service.access - INFO - "
    "/payments.v1.PaymentService/RequestPayment OK 0.10ms peer=forged"
)
# The marker starts each malformed member: a log that shortens the member still shows it.
BAGGAGE = f"k1=v1,{MARKER}\n{FORGED_LINE},{MARKER}\x1b[31mred\x1b[0m,{MARKER} key=v," + "=," * 80
BAGGAGE_BYTES = 350  # at least this much hostile baggage per call
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACESTATE = f"a=1,{MARKER}\n{FORGED_LINE}\x1b[31m,="
HOSTILE_HEADERS = [
    ("baggage", BAGGAGE),
    ("traceparent", TRACEPARENT),
    ("tracestate", TRACESTATE),
]
MAX_LOG_BYTES_PER_CALL = {"text": 400, "json": 700}  # an access-log line is ~140 / ~420 bytes
MAX_EXTRA_BYTES_PER_CALL = 16  # hostile headers versus clean calls, on average
MAX_EXTRA_LINES = 2  # e.g. one notice that malformed headers are being ignored
METHOD = "/payments.v1.PaymentService/RequestPayment"
SEPARATOR = "/payments.v1.PaymentService/GetPayment"  # its access-log line splits the phases
CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")  # every control character but \t and \n


def _request() -> bytes:
    """A valid RequestPayment (a fresh key), length-prefixed for the wire."""
    return grpc_message(valid_request().SerializeToString())


def _answered(connection: Connection, path: str, headers: list[tuple[str, str]]) -> bool:
    """Whether a call with ``headers`` ended with a gRPC status (whatever it is), not with
    a reset stream, a GOAWAY or a closed connection."""
    return connection.call(path, _request(), headers=headers).grpc_status is not None


def _separator(connection: Connection) -> None:
    request = payments_pb2.GetPaymentRequest(payment_id="not-a-uuid").SerializeToString()
    assert connection.call(SEPARATOR, grpc_message(request)).grpc_status is not None


@contextmanager
def _server(log_format: str, with_otlp: bool) -> Iterator[tuple[CapturedServer, int]]:
    """An in-memory server at the default LOG_LEVEL (INFO); yields it and its port."""
    port = free_port()
    env = {"PORT": str(port), "HOST": "127.0.0.1", "LOG_FORMAT": log_format}
    with running_receiver() as (_, receiver_port):
        if with_otlp:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver_port}"
        with CapturedServer(env) as server:
            try:  # a start slowed by a busy machine is not what this test is about
                wait_for_port(port, timeout=30)
            except TimeoutError as error:
                exited = server.process.poll()
                raise TimeoutError(f"{error} (exit status {exited}):\n{server.output()}") from None
            yield server, port


def _phases(output: bytes) -> tuple[list[bytes], list[bytes]]:
    """The log lines of the clean calls and of the hostile ones (split at the separators)."""
    lines = output.split(b"\n")
    marks = [
        i for i, line in enumerate(lines) if SEPARATOR.encode() in line and b"forged" not in line
    ]
    assert len(marks) >= 3, output.decode(errors="replace")[-3000:]
    return lines[marks[0] + 1 : marks[1] + 1], lines[marks[1] + 1 : marks[2] + 1]


@pytest.mark.parametrize("with_otlp", [False, True], ids=["no-otlp", "otlp"])
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_hostile_trace_headers_never_reach_the_logs(log_format: str, with_otlp: bool) -> None:
    assert len(BAGGAGE) >= BAGGAGE_BYTES
    with _server(log_format, with_otlp) as (server, port):
        with connected(port) as connection:
            _separator(connection)
            for _ in range(CALLS):
                assert _answered(connection, METHOD, [])
            _separator(connection)
            for _ in range(CALLS):
                assert _answered(connection, METHOD, HOSTILE_HEADERS)
            _separator(connection)
        time.sleep(0.2)  # the last lines reach the pipe
        output = server.output_bytes()
    clean, hostile = _phases(output)
    clean_bytes, hostile_bytes = sum(map(len, clean)), sum(map(len, hostile))
    summary = (
        f"{log_format}, {'with' if with_otlp else 'without'} OTLP: per clean call "
        f"{clean_bytes / CALLS:.0f} bytes in {len(clean) / CALLS:.1f} lines, per hostile call "
        f"{hostile_bytes / CALLS:.0f} bytes in {len(hostile) / CALLS:.1f} lines; marker logged "
        f"{output.count(MARKER.encode())} times, raw control characters "
        f"{len(CONTROL.findall(output))}, forged lines {output.count(b'peer=forged')}"
    )
    print(f"\n{summary}")
    assert MARKER.encode() not in output, summary
    assert b"peer=forged" not in output, summary
    assert not CONTROL.search(output), summary
    if log_format == "json":
        for line in hostile:
            if line.startswith(b"{"):
                json.loads(line)  # every record line is one whole JSON object
    assert len(hostile) <= len(clean) + MAX_EXTRA_LINES, summary
    assert hostile_bytes <= clean_bytes + MAX_EXTRA_BYTES_PER_CALL * CALLS, summary
    assert hostile_bytes <= MAX_LOG_BYTES_PER_CALL[log_format] * CALLS, summary


def test_control_characters_in_the_method_path_reach_no_log() -> None:
    """The access log does print the method: a path forging a line or an escape must not
    get there. grpc answers UNIMPLEMENTED for such a path before any handler runs; this
    keeps that so."""
    path = METHOD + f"\n{FORGED_LINE} {MARKER}\x1b[31m"
    with _server("text", with_otlp=False) as (server, port):
        with connected(port) as connection:
            ended = [connection.call(path, _request()).code for _ in range(CALLS)]
            _separator(connection)
        time.sleep(0.2)
        output = server.output_bytes()
    print(f"\nendings: {set(ended)}; {len(output)} bytes of log")
    assert MARKER.encode() not in output
    assert not CONTROL.search(output)
