"""`python -m bench.instructions`: CPU instructions per call of each target, counted by valgrind.

Calls/s on a shared, virtualised machine move by up to 30% between runs; instruction counts
move far less: measured one at a time on an otherwise idle machine, a target repeats within
0.5%. grpc.aio targets move by up to about 10% with the machine's load (how many
completions each wake-up of the loop handles depends on timing): targets measured at once
(``--parallel 2``), or beside other work, count more, so compare targets measured in one
run, one at a time.

Each target server runs twice under ``valgrind --tool=callgrind``, which counts the
user-space instructions of the whole process (grpcio's C core included): once serving
``--warmup`` calls and once ``--warmup`` + ``--calls``. The difference divided by
``--calls`` is the cost of one call, with start-up and warm-up cancelled out.

The kernel's work (the sockets, the wake-ups) is not counted. It is about the same for the
targets of one server model, so their ratio of instructions is lower than their ratio of
calls/s; between server models it is not (grpc.aio spends half as much again in the kernel
as the synchronous server), so compare models on CPU per call (`python -m bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from bench.__main__ import start_target
from bench.load import run_calls
from bench.targets import TARGETS, Target

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _instructions(target: Target, method: str, calls: int, workers: int) -> int:
    """Instructions the target's process executed from start to exit, serving ``calls``."""
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "valgrind.log"
        valgrind = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")
        with ExitStack() as stack:  # closing it stops the server: valgrind then reports
            port = start_target(
                target,
                stack,
                workers,
                wrapper=(*valgrind, f"--log-file={log}"),
                pinned=False,
                timeout=300,
            )
            errors = asyncio.run(run_calls(f"127.0.0.1:{port.port}", method, 16, calls))
            if errors:
                raise RuntimeError(f"{target.name}: {errors} of {calls} calls failed")
            time.sleep(1)  # let the last responses and span exports leave
        found = _COLLECTED.search(log.read_text())
        if found is None:
            raise RuntimeError(f"{target.name}: valgrind reported no count:\n{log.read_text()}")
        return int(found.group(1))


def _per_call(target: Target, method: str, warmup: int, calls: int, workers: int) -> float:
    short = _instructions(target, method, warmup, workers)
    long = _instructions(target, method, warmup + calls, workers)
    return (long - short) / calls


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument(
        "--targets",
        nargs="+",
        default=["bare", "bare-sync", "handlers", "quiet", "defaults", "traced", "traced-10"],
    )
    parser.add_argument(
        "--method", default="RequestPayment", choices=["RequestPayment", "GetPayment"]
    )
    parser.add_argument("--warmup", type=int, default=300, help="calls in both runs")
    parser.add_argument("--calls", type=int, default=1200, help="calls only the second run makes")
    parser.add_argument("--workers", type=int, default=10, help="MAX_WORKERS of every server")
    parser.add_argument(
        "--parallel", type=int, default=1, help="targets measured at once (more: less steady)"
    )
    args = parser.parse_args()
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {sorted(TARGETS)}")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        raise SystemExit(2)

    print(
        f"{args.method} at concurrency 16: instructions per call over {args.calls} calls "
        f"(after {args.warmup}), MAX_WORKERS={args.workers}; a few minutes per target"
    )
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = {
            name: pool.submit(
                _per_call, TARGETS[name], args.method, args.warmup, args.calls, args.workers
            )
            for name in args.targets
        }
        counts = {name: future.result() for name, future in futures.items()}
    bare = counts.get("bare")
    for name, count in counts.items():
        ratio = f"x{bare / count:.2f} of bare" if bare and name != "bare" else ""
        print(f"{name:<22} {count:>12,.0f} instructions/call  {ratio}", flush=True)


if __name__ == "__main__":
    main()
