"""`python -m bench`: calls/s, latency and server CPU per call against a bare server.

The server under test is pinned to CPU 0 and this load generator to CPU 1, so each
side has one core; the bare server runs in the same session for a fair ratio. CPU per
call is the server process's user + system time (/proc/<pid>/stat) over a round,
divided by the calls it answered: unlike calls/s it does not depend on the client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from bench.load import Result, run_load
from bench.targets import PYTHON, TARGETS, Target
from tests.support.network import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = 0
CLIENT_CPU = 1


@dataclass(frozen=True)
class Started:
    port: int
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        with Path(f"/proc/{self.pid}/stat").open() as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_target(
    target: Target,
    stack: ExitStack,
    workers: int,
    *,
    wrapper: tuple[str, ...] = (),
    pinned: bool = True,
    timeout: float = 15.0,
) -> Started:
    """Start ``target`` (under ``wrapper``, e.g. valgrind) once it accepts connections;
    the stack stops it with SIGTERM. ``timeout`` bounds both. Its output is discarded
    (it still writes its logs: they cost what they cost in production)."""
    port = free_port()
    env = {**os.environ, **target.env, "PORT": str(port), "HOST": "127.0.0.1"}
    env["MAX_WORKERS"] = str(workers)
    if target.prepare is not None:
        env.update(target.prepare(stack))
    process = subprocess.Popen(
        [*wrapper, PYTHON, *target.args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if pinned:  # before the server starts a thread (no preexec_fn: grpc/grpc#43055)
        os.sched_setaffinity(process.pid, {SERVER_CPU})

    def stop() -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()

    stack.callback(stop)
    wait_for_port(port, timeout)
    return Started(port, process.pid)


def _ratio(value: float | None, base: float | None, *, inverse: bool = False) -> str:
    if value is None or base is None or not value or not base:
        return ""
    return f"x{(base / value) if inverse else (value / base):.2f}"


def _row(
    target: str,
    method: str,
    concurrency: int,
    result: Result,
    base: Result | None,
    floor: Result | None,
) -> str:
    """calls/s and CPU per call, each also as a ratio to the baseline and to the floor."""
    cpu = result.cpu_us
    rate = [_ratio(result.rate, b.rate) if b else "" for b in (base, floor)]
    cpu_ratio = [_ratio(cpu, b.cpu_us, inverse=True) if b else "" for b in (base, floor)]
    return (
        f"{target:<14} {method:<15} {concurrency:>4} {result.rate:>9,.0f} "
        f"{result.percentile(50):>7.2f} {result.percentile(99):>7.2f} {result.errors:>6} "
        f"{(f'{cpu:.0f}' if cpu is not None else ''):>7} "
        f"{rate[0]:>7} {cpu_ratio[0]:>7} {rate[1]:>7} {cpu_ratio[1]:>7}"
    )


def _combine(rounds: list[Result]) -> Result:
    """The median round's rate and CPU per call, with every round's latencies and errors."""
    median = statistics.median(r.rate for r in rounds)
    cpus = [r.cpu_us for r in rounds if r.cpu_us is not None]
    return Result(
        calls=round(median * rounds[0].seconds),
        errors=sum(r.errors for r in rounds),
        seconds=rounds[0].seconds,
        latencies_ms=[ms for r in rounds for ms in r.latencies_ms],
        cpu_us=statistics.median(cpus) if cpus else None,
    )


def _round(started: Started, method: str, concurrency: int, args: argparse.Namespace) -> Result:
    before = started.cpu_seconds()
    result = asyncio.run(
        run_load(f"127.0.0.1:{started.port}", method, concurrency, args.duration, args.warmup)
    )
    used = started.cpu_seconds() - before
    return replace(result, cpu_us=used / result.all_calls * 1e6 if result.all_calls else None)


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
    parser.add_argument(
        "--floor",
        default="bare-sync",
        help="a second yardstick every row is also compared with (default: %(default)s)",
    )
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
        f"targets taking turns; calls/s and CPU are the median round; MAX_WORKERS={args.workers}"
    )
    header = (
        f"{'target':<14} {'method':<15} {'conc':>4} {'calls/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'cpu us':>7} {'rate':>7} {'cpu':>7} {'rate':>7} {'cpu':>7}"
    )
    with ExitStack() as stack:
        started = {target.name: start_target(target, stack, args.workers) for target in targets}
        print(header)
        print("-" * len(header))
        for method in args.methods:
            for concurrency in args.concurrency:
                rounds: dict[str, list[Result]] = {target.name: [] for target in targets}
                for turn in range(args.rounds):
                    # Rotate who goes first so a slow spell of the machine hits everyone.
                    for target in targets[turn % len(targets) :] + targets[: turn % len(targets)]:
                        rounds[target.name].append(
                            _round(started[target.name], method, concurrency, args)
                        )
                results = {name: _combine(r) for name, r in rounds.items()}
                floor = results.get(args.floor)
                for target in targets:
                    base = results.get(target.baseline or "")
                    row = _row(target.name, method, concurrency, results[target.name], base, floor)
                    print(row, flush=True)
    print(
        "\ncpu us: the server's user + system CPU per call; rate, cpu: calls/s and CPU per "
        f"call as a ratio to the target's baseline, then to {args.floor} (1 is as cheap as it)"
    )
    for target in targets:
        if target.baseline:
            print(f"  {target.name}: {target.description}; baseline {target.baseline}")


if __name__ == "__main__":
    main()
