"""An OTLP/gRPC trace receiver for benchmarks: `python -m bench.otlp_sink PORT`.

Receives (and counts) every span like Jaeger's OTLP port would; prints the count on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading

from tests.support.otlp_receiver import running_receiver


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with running_receiver(port=int(sys.argv[1])) as (receiver, _port):
        stop.wait()
        print(f"otlp sink: received {len(receiver.spans())} spans", flush=True)


if __name__ == "__main__":
    main()
