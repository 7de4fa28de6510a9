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
import statistics
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

from bench.load import Result, run_load
from bench.targets import PYTHON, TARGETS, Target, free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = 0
CLIENT_CPU = 1


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"server on port {port} did not start")


def start_target(
    target: Target,
    stack: ExitStack,
    workers: int,
    *,
    wrapper: tuple[str, ...] = (),
    pinned: bool = True,
    timeout: float = 15.0,
) -> int:
    """Start ``target`` (under ``wrapper``, e.g. valgrind) and return its port once it
    accepts connections; the stack stops it with SIGTERM. ``timeout`` bounds both."""
    port = free_port()
    env = {**os.environ, **target.env, "PORT": str(port), "HOST": "127.0.0.1"}
    env["MAX_WORKERS"] = str(workers)
    if target.prepare is not None:
        env.update(target.prepare(stack))
    process = subprocess.Popen(
        [*wrapper, PYTHON, *target.args],
        env=env,
        cwd=ROOT,
        preexec_fn=(lambda: os.sched_setaffinity(0, {SERVER_CPU})) if pinned else None,
    )

    def stop() -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()

    stack.callback(stop)
    _wait_for_port(port, timeout)
    return port


def _row(target: str, method: str, concurrency: int, result: Result, ratio: str) -> str:
    return (
        f"{target:<22} {method:<15} {concurrency:>4} {result.rate:>10,.0f} "
        f"{result.percentile(50):>8.2f} {result.percentile(99):>8.2f} {result.errors:>6} {ratio:>7}"
    )


def _combine(rounds: list[Result]) -> Result:
    """The median round's rate, with the latencies and errors of every round."""
    median = statistics.median(r.rate for r in rounds)
    return Result(
        calls=round(median * rounds[0].seconds),
        errors=sum(r.errors for r in rounds),
        seconds=rounds[0].seconds,
        latencies_ms=[ms for r in rounds for ms in r.latencies_ms],
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--methods", nargs="+", default=["RequestPayment", "GetPayment"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per round")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds discarded per round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per cell; targets take turns each round"
    )
    parser.add_argument("--workers", type=int, default=10, help="MAX_WORKERS of every server")
    args = parser.parse_args()

    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 CPUs; server and client will share one")
    else:
        os.sched_setaffinity(0, {CLIENT_CPU})
    names = list(dict.fromkeys(args.targets))
    for name in list(names):
        baseline = TARGETS[name].baseline
        if baseline is not None and baseline not in names:
            names.insert(0, baseline)
    targets = [TARGETS[name] for name in names]

    print(
        f"servers pinned to CPU {SERVER_CPU}, load generator to CPU {CLIENT_CPU}; per cell "
        f"{args.rounds} rounds of {args.duration:g}s (after {args.warmup:g}s warm-up), the "
        f"targets taking turns; calls/s is the median round; MAX_WORKERS={args.workers}"
    )
    header = (
        f"{'target':<22} {'method':<15} {'conc':>4} {'calls/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'ratio':>7}"
    )
    with ExitStack() as stack:
        ports = {target.name: start_target(target, stack, args.workers) for target in targets}
        print(header)
        print("-" * len(header))
        for method in args.methods:
            for concurrency in args.concurrency:
                rounds: dict[str, list[Result]] = {target.name: [] for target in targets}
                for turn in range(args.rounds):
                    # Rotate who goes first so a slow spell of the machine hits everyone.
                    for target in targets[turn % len(targets) :] + targets[: turn % len(targets)]:
                        address = f"127.0.0.1:{ports[target.name]}"
                        rounds[target.name].append(
                            asyncio.run(
                                run_load(address, method, concurrency, args.duration, args.warmup)
                            )
                        )
                results = {name: _combine(r) for name, r in rounds.items()}
                for target in targets:
                    result = results[target.name]
                    base = results.get(target.baseline or "")
                    ratio = f"x{result.rate / base.rate:.2f}" if base else ""
                    print(_row(target.name, method, concurrency, result, ratio), flush=True)
    print("\nratio: median calls/s of the target divided by that of its baseline in this run")
    for target in targets:
        if target.baseline:
            print(f"  {target.name}: {target.description}; baseline {target.baseline}")


if __name__ == "__main__":
    main()
