"""`python -m bench.soak` (`make soak`): hours of traffic compressed into minutes.

Measures the service's capacity (closed loop, unique keys), then offers ~70% of it at a
fixed rate (open loop: latency counts from each call's scheduled start, so a stall is
not hidden) for --minutes, printing throughput, p50/p99 and the server's RSS per window.
Idempotency keys cycle over a pool, so after the first pass every call is a replay and
the in-memory store stops growing: RSS growth after warm-up then means a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import time
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.__main__ import CLIENT_CPU, start_target
from bench.load import run_load
from bench.targets import TARGETS
from payments_service import payments_pb2, payments_pb2_grpc

#: Concurrent callers following the schedule: enough for 70% of capacity, below the
#: default MAX_CONCURRENT_RPCS (100) so that refusals mean the service fell behind.
CALLERS = 64
#: Callers per connection: below the ~64 calls in flight from which grpc core refuses some
#: new streams of a connection near MAX_CONCURRENT_STREAMS (docs/reliability.md), so a
#: flood meets the service's own cap instead.
CALLERS_PER_CONNECTION = 50


@dataclass
class Window:
    """What one reporting window saw."""

    started: float
    calls: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    #: How long a refusal (RESOURCE_EXHAUSTED) took, from sending the call.
    refused_ms: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (found through /proc/net/tcp*)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            parts = row.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                link = str(fd.readlink())
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(entry.name)
        except OSError:
            continue
    raise LookupError(f"no process listens on port {port}")


def _request(pool_index: int, run: str) -> payments_pb2.RequestPaymentRequest:
    return payments_pb2.RequestPaymentRequest(
        amount_minor=1000 + pool_index % 5000,
        currency="EUR",
        order_id=f"soak-order-{pool_index}",
        idempotency_key=f"soak-{run}-{pool_index:08d}",
        metadata={"source": "soak"},
    )


async def soak(
    target: str,
    pid: int,
    rate: float,
    minutes: float,
    window_s: float,
    pool: int,
    callers: int = CALLERS,
) -> list[tuple[Window, float]]:
    """Offer ``rate`` calls/s for ``minutes``; print and return each window and its RSS.

    ``callers`` coroutines take the next slot of a fixed schedule; a call's latency counts from
    its slot, so when the service falls behind, the delay shows up in p99.
    """
    run = os.urandom(4).hex()
    count = max(1, int(minutes * 60 / window_s))
    windows = [Window(started=i * window_s) for i in range(count)]
    slots = itertools.count()
    async with AsyncExitStack() as channels:
        # One connection each (a local subchannel pool: channels to one target share
        # connections otherwise).
        stubs = [
            payments_pb2_grpc.PaymentServiceStub(
                await channels.enter_async_context(
                    grpc.aio.insecure_channel(
                        target, options=[("grpc.use_local_subchannel_pool", 1)]
                    )
                )
            )
            for _ in range(-(-callers // CALLERS_PER_CONNECTION))
        ]
        start = time.perf_counter()
        total = int(count * window_s * rate)

        async def caller(stub: payments_pb2_grpc.PaymentServiceAsyncStub) -> None:
            while (slot := next(slots)) < total:
                scheduled = start + slot / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.perf_counter()
                if sent >= start + len(windows) * window_s:
                    return  # behind schedule past the end: stop, do not run over
                try:
                    await stub.RequestPayment(_request(slot % pool, run), timeout=10)
                    code = "OK"
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                done = time.perf_counter()
                # Counted in the window it finished in; latency from its scheduled slot.
                window = windows[min(len(windows) - 1, int((done - start) // window_s))]
                window.calls += 1
                window.errors += code != "OK"
                window.codes[code] += 1
                window.latencies_ms.append((done - scheduled) * 1000)
                if code == "RESOURCE_EXHAUSTED":
                    window.refused_ms.append((done - sent) * 1000)

        async def reporter() -> list[tuple[Window, float]]:
            reported = []
            for number, window in enumerate(windows, start=1):
                await asyncio.sleep(max(0.0, start + number * window_s - time.perf_counter()))
                rss = rss_mib(pid)  # sampled at the end of the window
                await asyncio.sleep(min(1.0, window_s / 4))  # its last calls finish
                reported.append((window, rss))
                _print_window(number, window, window_s, rss)
            return reported

        tasks = [asyncio.create_task(caller(stubs[i % len(stubs)])) for i in range(callers)]
        reported = await reporter()
        await asyncio.gather(*tasks)
    return reported


def _print_window(number: int, window: Window, seconds: float, rss: float) -> None:
    print(
        f"{number:>6} {window.started:>8.0f} {window.calls / seconds:>9,.0f} "
        f"{window.percentile(50):>8.2f} {window.percentile(99):>8.2f} "
        f"{window.errors:>6} {rss:>9.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--target", default="defaults", choices=["defaults", "quiet", "postgres"])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--load", type=float, default=0.7, help="share of measured capacity")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per printed row")
    parser.add_argument("--warmup-windows", type=int, default=2, help="rows before the baseline")
    parser.add_argument("--key-pool", type=int, default=20_000, help="distinct keys cycled")
    parser.add_argument("--workers", type=int, default=10, help="MAX_WORKERS of the server")
    parser.add_argument(
        "--callers",
        type=int,
        default=CALLERS,
        help="concurrent callers; with --load above 1 and more callers than "
        "MAX_CONCURRENT_RPCS (100) this is a flood that the cap must refuse",
    )
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {CLIENT_CPU})

    with ExitStack() as stack:
        port = start_target(TARGETS[args.target], stack, args.workers).port
        pid = server_pid(port)
        target = f"127.0.0.1:{port}"
        capacity = asyncio.run(run_load(target, "RequestPayment", 16, 10.0, 2.0))
        rate = capacity.rate * args.load
        print(
            f"{args.target}: capacity {capacity.rate:,.0f} calls/s (RequestPayment, 16 callers, "
            f"closed loop, p99 {capacity.percentile(99):.2f} ms); soaking at {args.load:.0%} = "
            f"{rate:,.0f} calls/s for {args.minutes:g} min, keys cycling over {args.key_pool:,}"
        )
        print(
            f"{'window':>6} {'t (s)':>8} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'errors':>6} {'RSS MiB':>9}"
        )
        windows = asyncio.run(
            soak(target, pid, rate, args.minutes, args.window, args.key_pool, args.callers)
        )

    steady = windows[args.warmup_windows :]
    if len(steady) < 2:
        print("too short to judge growth: run longer than the warm-up")
        return
    base_rss, last_rss = steady[0][1], steady[-1][1]
    peak_rss = max(rss for _, rss in steady)
    first_p99, last_p99 = steady[0][0].percentile(99), steady[-1][0].percentile(99)
    errors = sum(w.errors for w, _ in windows)
    codes = sum((w.codes for w, _ in windows), collections.Counter[str]())
    print(
        f"after {args.warmup_windows} warm-up windows: RSS {base_rss:.1f} -> {last_rss:.1f} MiB "
        f"(peak {peak_rss:.1f}, growth {100 * (last_rss - base_rss) / base_rss:+.1f}%); "
        f"p99 {first_p99:.2f} -> {last_p99:.2f} ms; errors {errors}"
    )
    print("answers: " + ", ".join(f"{code} {count:,}" for code, count in codes.most_common()))
    refused = Window(started=0, latencies_ms=[ms for w, _ in windows for ms in w.refused_ms])
    if refused.latencies_ms:
        print(
            f"refusals answered in p50 {refused.percentile(50):.2f} ms, "
            f"p99 {refused.percentile(99):.2f} ms (from sending the call)"
        )


if __name__ == "__main__":
    main()
