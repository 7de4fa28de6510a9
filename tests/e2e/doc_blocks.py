"""The shell and Python blocks of the documentation, and how the doc tests run them.

Every fenced block tagged ``bash``, ``sh``, ``shell`` or ``python`` in README.md,
CONTRIBUTING.md and docs/*.md is run as written, from the repository's root, by a shell
that never activated the virtual environment (``.venv/bin`` is not on PATH, as in a new
terminal). An HTML comment on the line right above a block says how to run it, as
``<!-- doc-test: DIRECTIVE; DIRECTIVE -->``:

``skip: REASON``      not run: it needs what REASON names (Docker, a cluster, minutes)
``server``            it serves until Ctrl+C: started, called once on localhost:7000 once
                      health says SERVING, then sent SIGINT; it must log a clean stop
``fails: TEXT``       it must exit non-zero, and its output contain TEXT
``output: TEXT``      its output must contain TEXT
``collect``           pytest commands: run with ``--collect-only`` (their tests run anyway)
``requires: TOOL``    needs TOOL (looked up like every test tool: missing fails under CI)
``postgres``          needs the tests' PostgreSQL; the database its DATABASE_URL names is
                      created when missing

Without a comment a block must exit 0. ``<payment_id>`` in a block stands for the id of a
payment the server has; no other ``<placeholder>`` may appear in a block that runs. Every
block runs with METRICS_PORT=0 in its environment unless it sets it (9464 may be taken).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments_service import payments_pb2_grpc
from payments_service.config import Settings
from tests.support.environment import ROOT, require, require_tool
from tests.support.requests import valid_request

DOCUMENTS = (
    "README.md",
    "CONTRIBUTING.md",
    *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")),
)
RUNNABLE = {"bash": "shell", "sh": "shell", "shell": "shell", "python": "python"}
DIRECTIVES = {"skip", "server", "fails", "output", "collect", "requires", "postgres"}
MARKER = re.compile(r"^<!-- doc-test: (.*) -->$")
PLACEHOLDER = re.compile(r"<([a-z_]+)>")
#: The address every documented command talks to.
PORT = 7000
BLOCK_SECONDS = 90.0
SERVER_READY_SECONDS = 120.0  # make may first (re)install .venv
VENV_BIN = Path(sys.executable).parent


@dataclass
class Block:
    document: str
    line: int
    language: str
    text: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def kind(self) -> str | None:
        """``shell`` or ``python`` for a block that runs, else None."""
        return RUNNABLE.get(self.language) if "skip" not in self.directives else None


def _directives(comment: str) -> dict[str, str]:
    parsed = {}
    for part in comment.split(";"):
        name, _, value = part.strip().partition(":")
        parsed[name.strip()] = value.strip()
    return parsed


def blocks() -> list[Block]:
    """Every fenced block of the documents, with the directives of its comment."""
    found = []
    for document in DOCUMENTS:
        lines = (ROOT / document).read_text().splitlines()
        number = 0
        while number < len(lines):
            opening = lines[number].strip()
            if not opening.startswith("```"):
                number += 1
                continue
            end = next(i for i in range(number + 1, len(lines)) if lines[i].strip() == "```")
            marker = MARKER.match(lines[number - 1]) if number else None
            found.append(
                Block(
                    document,
                    number + 1,
                    opening.removeprefix("```").strip(),
                    "\n".join(lines[number + 1 : end]) + "\n",
                    _directives(marker[1]) if marker else {},
                )
            )
            number = end + 1
    return found


def problems(block: Block) -> list[str]:
    """What is wrong with a block's directives or text (nothing for a good one)."""
    found = [f"unknown directive {name!r}" for name in block.directives if name not in DIRECTIVES]
    if "skip" in block.directives and not block.directives["skip"]:
        found.append("skip needs a reason")
    if block.directives and block.language not in RUNNABLE:
        found.append(
            f"a doc-test comment above a {block.language or 'plain'} block, which never runs"
        )
    if block.kind is not None:
        unknown = set(PLACEHOLDER.findall(block.text)) - {"payment_id"}
        found += [f"placeholder <{name}> in a block that runs" for name in sorted(unknown)]
    return found


def environment(block: Block) -> dict[str, str]:
    """A new terminal's environment: no virtual environment, no setting of the service."""
    settings = {name.upper() for name in Settings.model_fields}
    dropped = {"VIRTUAL_ENV", "PYTHONPATH", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", *settings}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("OTEL_")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != VENV_BIN]
    env["PATH"] = os.pathsep.join(path)
    env["METRICS_PORT"] = "0"
    if "collect" in block.directives:
        env["PYTEST_ADDOPTS"] = "--collect-only -q"
    return env


def prepare(block: Block) -> str:
    """Check what the block needs; returns its text with ``<payment_id>`` filled in."""
    for tool in block.directives.get("requires", "").split():
        require_tool(tool)
    if "postgres" in block.directives:
        _create_database(block)
    text = block.text
    if "<payment_id>" in text:
        text = text.replace("<payment_id>", create_payment())
    return text


def command(block: Block, text: str, directory: Path) -> list[str]:
    """The command that runs ``text``, written to a file in ``directory``."""
    script = directory / ("block.py" if block.kind == "python" else "block.sh")
    script.write_text(text)
    if block.kind == "python":
        return [sys.executable, str(script)]
    return ["bash", "-e", "-o", "pipefail", str(script)]


def run(block: Block, directory: Path) -> subprocess.CompletedProcess[str]:
    """Run a block to its end; check its exit status and output."""
    text = prepare(block)
    result = subprocess.run(
        command(block, text, directory),
        cwd=ROOT,
        env=environment(block),
        capture_output=True,
        text=True,
        timeout=BLOCK_SECONDS,
        check=False,
    )
    output = result.stdout + result.stderr
    if "fails" in block.directives:
        assert result.returncode != 0, f"{block.id} was to fail:\n{output}"
        assert block.directives["fails"] in output, output
    else:
        assert result.returncode == 0, f"{block.id} failed ({result.returncode}):\n{text}\n{output}"
    assert block.directives.get("output", "") in output, output
    return result


def serve(block: Block, directory: Path) -> str:
    """Start a server block, call it, stop it as Ctrl+C would; returns its output."""
    text = prepare(block)
    process = subprocess.Popen(
        command(block, text, directory),
        cwd=ROOT,
        env=environment(block),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        wait_until_serving(process)
        create_payment()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
    # make answers Ctrl+C with "Interrupt" and dies of SIGINT; the service itself exits 0.
    assert process.returncode in (0, -signal.SIGINT), output
    assert "✓ Server stopped successfully" in output, output
    assert block.directives.get("output", "") in output, output
    return output


def wait_until_serving(process: subprocess.Popen[str] | None = None) -> None:
    """Until health says SERVING on localhost:7000 (``process`` must not end before)."""
    deadline = time.monotonic() + SERVER_READY_SECONDS
    with grpc.insecure_channel(f"localhost:{PORT}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"it ended before serving ({process.returncode}):\n{output}")
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"nothing served on localhost:{PORT} within {SERVER_READY_SECONDS}s")


def create_payment() -> str:
    """A payment on the server at localhost:7000 (always the same one: a replay after the
    first time); returns its id."""
    with grpc.insecure_channel(f"localhost:{PORT}") as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        answer = stub.RequestPayment(
            valid_request("doc-test-payment-0001", currency="USD", order_id="doc-test-order"),
            timeout=10,
        )
        return str(answer.payment_id)


def port_is_free(timeout: float = 30.0) -> bool:
    """Whether nothing listens on localhost:7000, waiting up to ``timeout`` for that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("localhost", PORT), timeout=1).close()
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _create_database(block: Block) -> None:
    from psycopg import OperationalError, connect, sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    match = re.search(r"postgresql://\S+", block.text)
    assert match, f"{block.id}: postgres, but no postgresql:// URL in the block"
    name = str(conninfo_to_dict(match[0])["dbname"])
    server = make_conninfo(match[0], dbname="postgres")
    try:
        with connect(server, autocommit=True, connect_timeout=5) as db:
            exists = db.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except OperationalError as error:
        require(False, f"PostgreSQL for {block.id} is not reachable: {error}")
