"""Shared fixtures: a real server on a real (free) port, its channel and stub; async tests
on uvloop. The helpers they use are in tests/support/."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import uvloop

from payments_service import payments_pb2_grpc
from payments_service.config import Settings
from tests.support.servers import LoopThread, RunningServer, ServerFactory, start_server


def pytest_asyncio_loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """async tests (pytest-asyncio) run on uvloop, as the service does (a hook may leave
    out the arguments it does not use: config and item here)."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    """The event loop in-process servers run on; closed after the test."""
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def server_factory(loop_thread: LoopThread) -> Iterator[ServerFactory]:
    """Build and start in-process servers (see :func:`start_server`); all are stopped at
    the end of the test."""
    started: list[RunningServer] = []

    def start(settings: Settings | None = None, **kwargs: Any) -> RunningServer:
        running = start_server(loop_thread, settings, **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(0)


@pytest.fixture
def server(server_factory: ServerFactory) -> RunningServer:
    """A running server with the in-memory store."""
    return server_factory()


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> payments_pb2_grpc.PaymentServiceStub:
    return payments_pb2_grpc.PaymentServiceStub(channel)
