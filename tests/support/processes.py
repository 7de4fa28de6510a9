"""Server processes for tests: ``python -m payments_service`` started with an environment
of the test's own, waited for (health), stopped, and their output kept.

A server whose stdout/stderr pipe fills up blocks in its logging, which would make any
test of its timing lie; :class:`CapturedServer` has a thread keep the pipe empty and the
bytes exact (no decoding, no newline translation: the log tests look for raw control
characters).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from typing import cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments_service.transport.servicer import SERVICE_NAME
from tests.support.environment import ROOT

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def start_server_process(
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = ("-m", "payments_service.server"),
    *,
    fd_limit: int | None = None,
) -> subprocess.Popen[str]:
    """Start ``python -m payments_service.server`` with ``env`` added to a clean environment.

    ``fd_limit`` sets its RLIMIT_NOFILE (soft and hard) before it starts.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full_env["METRICS_PORT"] = "0"  # unless a test asks for /metrics: 9464 may be taken
    full_env.update(env or {})

    command = [sys.executable, *args]
    if fd_limit is not None:
        # The shell sets the limit (soft and hard) and becomes the server. No preexec_fn: it
        # makes subprocess fork() instead of vfork(), and grpc's fork handler then restarts
        # its poller in the child, which aborts on the descriptors closed before exec
        # ("epoll_wait error: Bad file descriptor", SIGABRT; grpc/grpc#43055).
        command = ["sh", "-c", f'ulimit -n {fd_limit} && exec "$@"', "sh", *command]
    return subprocess.Popen(
        command,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


def wait_until_ready(port: int, timeout: float = 20.0) -> None:
    """Block until the API's readiness (grpc.health.v1 for the service) says SERVING."""
    wait_for_health(port, SERVING, timeout)


#: The service whose health the API's readiness is (grpc.health.v1).
SERVICE = SERVICE_NAME


def wait_for_health(port: int, status: int, timeout: float, service: str = SERVICE) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                last = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
            except grpc.RpcError as error:
                last = error.code()
            if last == status:
                return
            time.sleep(0.1)
    raise TimeoutError(f"health of {service!r} on port {port} is {last}, not {status}")


def stop_process(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    """Stop a server process (SIGKILL if ``sig`` is SIGKILL) and return its output."""
    if process.poll() is None:
        process.send_signal(sig)
    output, _ = process.communicate(timeout=30)
    return output


class CapturedServer:
    """A running server: ``output()`` so far, ``signal_and_wait()`` times its exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = start_server_process(env, args=("-m", "payments_service"))
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        # The bytes under the text wrapper (Popen's text=True: an io.TextIOWrapper over a
        # BufferedReader).
        raw = cast(io.BufferedReader, cast(io.TextIOWrapper, self.process.stdout).buffer)
        while chunk := raw.read1(65536):
            self._chunks.append(chunk)

    def output_bytes(self) -> bytes:
        return b"".join(self._chunks)

    def output(self) -> str:
        return self.output_bytes().decode(errors="replace")

    def signal_and_wait(self, timeout: float, sig: int = signal.SIGTERM) -> float | None:
        """Send ``sig``; the seconds until the process ended, or None if it still runs
        after ``timeout`` seconds (it is killed then)."""
        sent = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        seconds = time.monotonic() - sent
        self.kill()  # collects the last output
        return seconds

    def kill(self) -> None:
        """End the process if it still runs, and collect the rest of its output."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> CapturedServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.kill()
