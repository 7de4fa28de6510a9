"""A closed-loop load generator on grpc.aio: N callers, each waiting for its answer."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from payments_service import payments_pb2, payments_pb2_grpc

if TYPE_CHECKING:  # a stub on a grpc.aio channel, whose calls are awaited
    from payments_service.payments_pb2_grpc import PaymentServiceAsyncStub as AsyncStub

    #: One call of the load: made on the stub, awaited by the caller.
    Call = Callable[[AsyncStub], Awaitable[object]]


@dataclass(frozen=True)
class Result:
    calls: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    #: Calls made in the whole round, warm-up included (what the server's CPU time covers).
    all_calls: int = 0
    #: The server's CPU time (user + system) per call, in microseconds, when measured.
    cpu_us: float | None = None

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def request_payment_factory() -> Call:
    """Calls RequestPayment with a unique key each time (every call creates a payment)."""
    prefix = uuid.uuid4().hex[:8]
    counter = itertools.count()

    def call(stub: AsyncStub) -> Awaitable[object]:
        return stub.RequestPayment(
            payments_pb2.RequestPaymentRequest(
                amount_minor=1250,
                currency="USD",
                order_id="order-123",
                idempotency_key=f"bench-{prefix}-{next(counter)}",
                metadata={"user_id": "user-789"},
            )
        )

    return call


async def _existing_payment(stub: AsyncStub) -> str:
    response = await stub.RequestPayment(
        payments_pb2.RequestPaymentRequest(
            amount_minor=1250,
            currency="USD",
            order_id="order-get",
            idempotency_key=f"bench-get-{uuid.uuid4()}",
        )
    )
    return str(response.payment_id)


async def _call_of(method: str, stub: AsyncStub) -> Call:
    """What one call of ``method`` is: a new payment, or reading an existing one."""
    if method == "RequestPayment":
        return request_payment_factory()
    get = payments_pb2.GetPaymentRequest(payment_id=await _existing_payment(stub))

    def call(stub: AsyncStub) -> Awaitable[object]:
        return stub.GetPayment(get)

    return call


async def run_calls(target: str, method: str, concurrency: int, calls: int) -> int:
    """Make exactly ``calls`` calls of ``method``, ``concurrency`` at a time; returns errors."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        call = await _call_of(method, stub)
        remaining = iter(range(calls))
        errors = 0

        async def caller() -> None:
            nonlocal errors
            for _ in remaining:
                try:
                    await call(stub)
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return errors


async def run_load(
    target: str, method: str, concurrency: int, duration: float, warmup: float
) -> Result:
    """Drive ``method`` at ``concurrency`` for ``warmup`` + ``duration`` seconds."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = payments_pb2_grpc.PaymentServiceStub(channel)
        call = await _call_of(method, stub)
        latencies: list[float] = []
        errors = 0
        calls = 0
        made = 0
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def caller() -> None:
            nonlocal errors, calls, made
            while True:
                began = time.perf_counter()
                if began >= stop_at:
                    return
                try:
                    await call(stub)
                    ok = True
                except grpc.aio.AioRpcError:
                    ok = False
                made += 1
                if began >= measure_from:
                    calls += 1
                    errors += not ok
                    latencies.append((time.perf_counter() - began) * 1000)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return Result(calls, errors, duration, latencies, all_calls=made)
