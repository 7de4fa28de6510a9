"""`python -m bench`: calls/s and latency of the service against a bare grpcio server.

The server under test is pinned to CPU 0 and this load generator to CPU 1, so each
side has one core; the bare server runs in the same session for a fair ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

from bench.load import Result, run_load
from bench.targets import PYTHON, TARGETS, Target

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = 0
CLIENT_CPU = 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"server on port {port} did not start")


def _start(target: Target, stack: ExitStack, workers: int) -> int:
    port = _free_port()
    env = {**os.environ, **target.env, "PORT": str(port), "HOST": "127.0.0.1"}
    env["MAX_WORKERS"] = str(workers)
    if target.prepare is not None:
        env.update(target.prepare(stack))
    process = subprocess.Popen(
        [PYTHON, *target.args],
        env=env,
        cwd=ROOT,
        preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}),
    )

    def stop() -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()

    stack.callback(stop)
    _wait_for_port(port)
    return port


def _row(target: str, method: str, concurrency: int, result: Result, ratio: str) -> str:
    return (
        f"{target:<22} {method:<15} {concurrency:>4} {result.rate:>10,.0f} "
        f"{result.percentile(50):>8.2f} {result.percentile(99):>8.2f} {result.errors:>6} {ratio:>7}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--methods", nargs="+", default=["RequestPayment", "GetPayment"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds discarded per cell")
    parser.add_argument("--workers", type=int, default=10, help="MAX_WORKERS of every server")
    args = parser.parse_args()

    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 CPUs; server and client will share one")
    else:
        os.sched_setaffinity(0, {CLIENT_CPU})
    targets = [TARGETS[name] for name in args.targets]
    for target in targets:
        baseline = target.baseline
        if baseline is not None and baseline not in args.targets:
            targets.insert(0, TARGETS[baseline])
            args.targets.insert(0, baseline)

    print(
        f"server pinned to CPU {SERVER_CPU}, load generator to CPU {CLIENT_CPU}; "
        f"{args.duration:g}s per cell after {args.warmup:g}s warm-up; MAX_WORKERS={args.workers}"
    )
    header = (
        f"{'target':<22} {'method':<15} {'conc':>4} {'calls/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    results: dict[tuple[str, str, int], Result] = {}
    for target in targets:
        with ExitStack() as stack:
            port = _start(target, stack, args.workers)
            for method in args.methods:
                for concurrency in args.concurrency:
                    result = asyncio.run(
                        run_load(
                            f"127.0.0.1:{port}", method, concurrency, args.duration, args.warmup
                        )
                    )
                    results[(target.name, method, concurrency)] = result
                    base = results.get((target.baseline or "", method, concurrency))
                    ratio = f"x{result.rate / base.rate:.2f}" if base else ""
                    print(_row(target.name, method, concurrency, result, ratio), flush=True)
    print("\nratio: calls/s of the target divided by calls/s of its baseline in this run")
    for target in targets:
        if target.baseline:
            print(f"  {target.name}: {target.description}; baseline {target.baseline}")


if __name__ == "__main__":
    main()
