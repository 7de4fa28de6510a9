"""The call gate's admission and drain, on its own (the servers' tests show it end to end)."""

from __future__ import annotations

import asyncio

import grpc

from payments_service.transport.calls import CLOSE_QUIET_SECONDS, WAIT, CallGate


async def test_the_cap_refuses_and_workers_take_turns() -> None:
    gate = CallGate(cap=2, workers=1)
    assert gate.admit() is None  # a worker at once
    assert gate.admit() is WAIT
    refused = gate.admit()
    assert isinstance(refused, grpc.Status)
    assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    turn = asyncio.ensure_future(gate.turn())
    await asyncio.sleep(0)
    assert not turn.done()
    gate.leave()  # the first call's worker goes to the second
    await asyncio.wait_for(turn, 1)
    gate.leave()
    assert gate.admitted == 0


async def test_an_idle_gate_drains_at_once_even_without_grace() -> None:
    gate = CallGate(cap=None, workers=1)
    assert await gate.drain(0) is True
    refused = gate.admit()
    assert isinstance(refused, grpc.Status)
    assert refused.code is grpc.StatusCode.UNAVAILABLE


async def test_a_drain_waits_for_admitted_calls_within_the_grace_period() -> None:
    gate = CallGate(cap=None, workers=1)
    assert gate.admit() is None
    asyncio.get_running_loop().call_later(0.05, gate.leave)
    assert await gate.drain(2) is True
    assert gate.admitted == 0


async def test_a_drain_reports_calls_still_running_when_the_grace_period_ends() -> None:
    gate = CallGate(cap=None, workers=1)
    assert gate.admit() is None
    assert await gate.drain(0.05) is False
    assert gate.admitted == 1


async def test_a_drain_ends_only_once_calls_have_stopped_coming() -> None:
    # grpc core cancels a call that reaches the server once it stops: the ports close
    # only after a quiet, not while clients are still being refused.
    gate = CallGate(cap=None, workers=1)
    loop = asyncio.get_running_loop()
    drain = asyncio.ensure_future(gate.drain(5))
    while not isinstance(gate.admit(), grpc.Status):  # served until the drain refuses
        gate.leave()
        await asyncio.sleep(0.001)
    for _ in range(20):  # a client retrying every 10 ms
        await asyncio.sleep(0.01)
        assert not drain.done()
        assert isinstance(gate.admit(), grpc.Status)
    last_refused = loop.time()
    assert await asyncio.wait_for(drain, 1) is True
    assert loop.time() - last_refused >= CLOSE_QUIET_SECONDS
