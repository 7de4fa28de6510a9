"""Hostile bytes are the client's fault, answered without an error in the log (issue 10).

Item 9: garbage request bytes to every method a client can reach without the API's own
messages (health, reflection, PaymentService/Health) must come back INVALID_ARGUMENT and
log nothing at ERROR; where grpc core answers before any Python code runs, its code is
fine (recorded here for the README's error table) but nothing may be logged at ERROR.
And what holds today and must keep holding: zip bombs, 4 GB length prefixes, deep
nesting and invalid UTF-8 are refused; a PING flood is sent away with a GOAWAY.

One server process serves the whole module; each test looks only at what its own calls
added to the log.
"""

from __future__ import annotations

import contextlib
import gzip
import time
from collections.abc import Callable, Iterator

import pytest
from grpc_reflection.v1alpha import reflection_pb2

from tests.support.h2_attacker import ENHANCE_YOUR_CALM, connected, grpc_message, unary_call
from tests.support.requests import valid_request
from tests.support.server_process import ServerProcess, running_server

# -- The contract: every threshold the tests assert ------------------------------------
#: Every hostile call must be answered within this.
ANSWER_SECONDS = 2.0
#: How long a log line may take to reach the test after its call was answered.
LOG_SETTLE_SECONDS = 0.3
#: A zip bomb: this much expanded data in a gzip message of about 61 KB (under the 64 KiB
#: limit), sent this many times; RSS may grow by at most the limit.
ZIP_BOMB_EXPANDED_BYTES = 60 << 20
ZIP_BOMBS = 5
ZIP_BOMB_RSS_LIMIT_MIB = 10.0
#: A PING flood: at most this many PINGs must earn a GOAWAY (ENHANCE_YOUR_CALM).
PING_FLOOD = 1000
#: What a refused message may come back as: the client's fault, or too large.
REFUSED = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}

#: No valid message of any type: field 31 with wire type 7, which does not exist.
GARBAGE = b"\xff\xff\xff"
CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = "/grpc.reflection.{}.ServerReflection/ServerReflectionInfo"
REQUEST_PAYMENT = "/payments.v1.PaymentService/RequestPayment"
LIST_SERVICES = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()

#: Where garbage goes: the port (its attribute on ServerProcess) and the method.
GARBAGE_TARGETS = {
    "Health/Check on PORT": ("port", CHECK),
    "Health/Check on HEALTH_PORT": ("health_port", CHECK),
    "Health/Watch on PORT": ("port", WATCH),
    "Health/Watch on HEALTH_PORT": ("health_port", WATCH),
    "reflection v1alpha": ("port", REFLECTION.format("v1alpha")),
    "reflection v1": ("port", REFLECTION.format("v1")),
    "PaymentService/Health": ("port", "/payments.v1.PaymentService/Health"),
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server() as running:
        yield running


def _code(port: int, path: str, message: bytes) -> str:
    """The status of a call sending ``message`` (and closing our side) on a new connection."""
    return unary_call(port, path, grpc_message(message), timeout=ANSWER_SECONDS).code


def _errors_logged_by(server: ServerProcess, action: Callable[[], object]) -> list[str]:
    """The ERROR lines and tracebacks the server logged while ``action`` ran."""
    before = len(server.error_lines())
    action()
    time.sleep(LOG_SETTLE_SECONDS)
    return server.error_lines()[before:]


@pytest.mark.parametrize("target", GARBAGE_TARGETS)
def test_garbage_bytes_are_invalid_argument_and_log_no_error(
    server: ServerProcess, target: str
) -> None:
    attribute, path = GARBAGE_TARGETS[target]
    port = int(getattr(server, attribute))
    # A reflection version the server does not serve runs no code of ours.
    served = "reflection" not in target or _code(port, path, LIST_SERVICES) != "UNIMPLEMENTED"
    codes: list[str] = []
    logged = _errors_logged_by(server, lambda: codes.append(_code(port, path, GARBAGE)))
    expected = "INVALID_ARGUMENT" if served else "UNIMPLEMENTED"
    print(f"{target}: {codes[0]}{'' if served else ' (not served)'}, {len(logged)} error lines")
    assert (codes[0], logged) == (expected, [])


#: Faults grpc core answers before any Python code of the server runs: (extra request
#: headers, the raw DATA sent; None sends END_STREAM on the HEADERS, without a message).
CORE_LEVEL_FAULTS: dict[str, tuple[list[tuple[str, str]], bytes | None]] = {
    "unknown grpc-encoding": (
        [("grpc-encoding", "snappy")],
        grpc_message(gzip.compress(valid_request().SerializeToString()), compressed=True),
    ),
    "corrupt gzip": (
        [("grpc-encoding", "gzip")],
        grpc_message(b"\x1f\x8b\x08\x00 this is no deflate stream", compressed=True),
    ),
    "malformed grpc-timeout": (
        [("grpc-timeout", "soon")],
        grpc_message(valid_request().SerializeToString()),
    ),
    "bad base64 in a -bin header": (
        [("x-trace-bin", "!!not*base64!!")],
        grpc_message(valid_request().SerializeToString()),
    ),
    "END_STREAM without a message": ([], None),
}
CORE_LEVEL_TARGETS = {
    "RequestPayment on PORT": ("port", REQUEST_PAYMENT),
    "Health/Check on HEALTH_PORT": ("health_port", CHECK),
}


@pytest.mark.parametrize("fault", CORE_LEVEL_FAULTS)
def test_faults_grpc_core_answers_get_a_status_and_log_no_error(
    server: ServerProcess, fault: str
) -> None:
    headers, body = CORE_LEVEL_FAULTS[fault]
    statuses: dict[str, str] = {}

    def send() -> None:
        for target, (attribute, path) in CORE_LEVEL_TARGETS.items():
            port = int(getattr(server, attribute))
            statuses[target] = unary_call(
                port, path, body, headers=headers, timeout=ANSWER_SECONDS
            ).code

    logged = _errors_logged_by(server, send)
    print(f"{fault}: {statuses}")
    assert all(code not in {"no status", "OK"} for code in statuses.values()), statuses
    assert logged == []


def test_a_zip_bomb_is_refused_at_once_without_memory_growth(server: ServerProcess) -> None:
    bomb = gzip.compress(bytes(ZIP_BOMB_EXPANDED_BYTES), compresslevel=9)
    body = grpc_message(bomb, compressed=True)
    baseline = server.rss_mib()
    codes = []
    for _ in range(ZIP_BOMBS):
        stream = unary_call(
            server.port,
            REQUEST_PAYMENT,
            body,
            headers=[("grpc-encoding", "gzip")],
            timeout=ANSWER_SECONDS,
        )
        codes.append(stream.code)
    growth = server.rss_mib() - baseline
    print(
        f"zip bomb ({len(bomb)} bytes -> {ZIP_BOMB_EXPANDED_BYTES >> 20} MiB): {codes}, "
        f"RSS {growth:+.1f} MiB"
    )
    assert set(codes) <= REFUSED
    assert len(codes) == ZIP_BOMBS
    assert growth <= ZIP_BOMB_RSS_LIMIT_MIB


#: Request bodies (raw DATA) that no server may accept.
HOSTILE_MESSAGES = {
    # The prefix announces 4 GiB; what follows is a small valid message.
    "4 GB length prefix": b"\x00\xff\xff\xff\xff" + valid_request().SerializeToString(),
    # 10,000 nested groups (field 15), well-formed: only the depth is wrong.
    "deep nesting": grpc_message(b"\x7b" * 10_000 + b"\x7c" * 10_000),
    # currency (field 2) is not UTF-8.
    "invalid UTF-8": grpc_message(b"\x12\x03\xff\xfe\xfd" + valid_request().SerializeToString()),
}


@pytest.mark.parametrize("kind", HOSTILE_MESSAGES)
def test_hostile_messages_are_refused(server: ServerProcess, kind: str) -> None:
    codes: list[str] = []
    logged = _errors_logged_by(
        server,
        lambda: codes.append(
            unary_call(
                server.port, REQUEST_PAYMENT, HOSTILE_MESSAGES[kind], timeout=ANSWER_SECONDS
            ).code
        ),
    )
    print(f"{kind}: {codes[0]}")
    assert codes[0] in REFUSED, (codes, logged)
    assert logged == [], (codes, logged)


def test_a_ping_flood_is_sent_away(server: ServerProcess) -> None:
    with connected(server.port) as flooder:
        sent = 0
        with contextlib.suppress(OSError):  # the server hung up; what it sent is still read
            while sent < PING_FLOOD and flooder.goaway is None:
                flooder.ping(sent.to_bytes(8, "big"))
                sent += 1
                flooder.drain()
        if flooder.goaway is None:
            flooder.listen(ANSWER_SECONDS)
        goaway = flooder.goaway
    print(f"PING flood: GOAWAY {goaway} after {sent} PINGs")
    assert goaway is not None
    assert goaway[1] == ENHANCE_YOUR_CALM
