"""`python -m payments_service` as a child process whose output a thread keeps reading,
and the new payments such tests send.

A server whose stdout/stderr pipe fills up blocks in its logging, which would make any
test of its timing lie; the reader thread keeps the pipe empty and the bytes exact (no
decoding, no newline translation: the log tests look for raw control characters).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid

from payments_service import payments_pb2
from tests.conftest import start_server_process


def new_payment(label: str) -> payments_pb2.RequestPaymentRequest:
    """A valid RequestPayment with a key never used before (``label`` makes it findable)."""
    return payments_pb2.RequestPaymentRequest(
        amount_minor=700,
        currency="EUR",
        order_id=f"order-{label}",
        idempotency_key=f"{label}-{uuid.uuid4().hex}",
    )


class ServerProcess:
    """A running server: ``output()`` so far, ``signal_and_wait()`` times its exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = start_server_process(env, args=("-m", "payments_service"))
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        raw = self.process.stdout.buffer  # the bytes under the text wrapper
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

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.kill()
