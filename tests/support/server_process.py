"""The server as a real process for the attack tests: configured by environment only.

``python -m payments_service`` on free loopback ports (PORT, HEALTH_PORT, METRICS_PORT),
ready once HEALTH_PORT answers SERVING. A thread drains its output all the time, so the
server never blocks on a full pipe however much it logs, and the test can read the log
so far at any moment. Also: what /proc says of the process (RSS, threads).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from grpc_health.v1 import health_pb2

from tests.support.network import free_port
from tests.support.processes import start_server_process, wait_for_health

SERVING = health_pb2.HealthCheckResponse.SERVING
#: What marks a log line as an error (text format) or a traceback in the output.
ERROR_MARKERS = (" - ERROR - ", " - CRITICAL - ", "Traceback")


@dataclass
class ServerProcess:
    """A started server process, its ports and its output so far."""

    process: subprocess.Popen[str]
    port: int
    health_port: int
    metrics_port: int
    _lines: list[str] = field(default_factory=list)
    _drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        return "".join(self._lines)

    def error_lines(self) -> list[str]:
        """The lines logged at ERROR (or worse) and the lines of tracebacks, so far."""
        return [line for line in self._lines if any(m in line for m in ERROR_MARKERS)]

    @property
    def proc_path(self) -> Path:
        """The process's directory in /proc (status, limits, fd, ...)."""
        return Path(f"/proc/{self.pid}")

    def status(self, name: str) -> int:
        """A number from /proc/<pid>/status, e.g. ``VmRSS`` (in KiB) or ``Threads``."""
        for line in (self.proc_path / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == name:
                return int(value.split()[0])
        raise KeyError(name)

    def fd_limits(self) -> tuple[int, int]:
        """RLIMIT_NOFILE of the process: (soft, hard)."""
        for line in (self.proc_path / "limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
        raise KeyError("Max open files")

    def rss_mib(self) -> float:
        return self.status("VmRSS") / 1024

    def threads(self) -> int:
        return self.status("Threads")

    def stop(self, timeout: float = 10.0) -> float:
        """SIGTERM, then SIGKILL after ``timeout`` s; returns how long it took to exit."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        elapsed = time.monotonic() - started
        if self._drain is not None:
            self._drain.join(10)
        return elapsed

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)
        self.process.stdout.close()


def start_server(
    env: dict[str, str] | None = None, *, fd_limit: int | None = None, ready_within: float = 20.0
) -> ServerProcess:
    """Start the server on loopback with ``env`` added; return once HEALTH_PORT is SERVING.

    ``fd_limit`` sets RLIMIT_NOFILE (soft = hard) of the process before it starts.
    """
    ports = {"PORT": free_port(), "HEALTH_PORT": free_port(), "METRICS_PORT": free_port()}
    full_env = {"HOST": "127.0.0.1", **{k: str(v) for k, v in ports.items()}, **(env or {})}
    process = start_server_process(full_env, args=("-m", "payments_service"), fd_limit=fd_limit)
    server = ServerProcess(
        process, int(full_env["PORT"]), int(full_env["HEALTH_PORT"]), int(full_env["METRICS_PORT"])
    )
    server._drain = threading.Thread(target=server._read_output, daemon=True)
    server._drain.start()
    try:
        wait_for_health(server.health_port, SERVING, ready_within, service="")
    except TimeoutError:
        server.stop()
        raise TimeoutError(f"the server did not become ready:\n{server.log}") from None
    return server


@contextlib.contextmanager
def running_server(
    env: dict[str, str] | None = None, *, fd_limit: int | None = None
) -> Iterator[ServerProcess]:
    """:func:`start_server` for a ``with`` block; the server is stopped at its end."""
    server = start_server(env, fd_limit=fd_limit)
    try:
        yield server
    finally:
        server.stop()
