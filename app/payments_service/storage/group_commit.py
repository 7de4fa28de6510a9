"""Group commit: many callers' writes, one statement and one commit per batch.

A durable commit waits for the disk, and each statement costs its driver a fixed amount
of CPU however many rows it carries. So callers hand their item to one writer task, which
writes whatever has queued up meanwhile (up to ``max_batch`` items) with one call of
``write_batch``, and while it waits for that, the next batch gathers. A lone item is
written at once; under load one flush serves many.

Every item carries its caller's deadline. The writer never starts work for an item whose
deadline has passed (its caller gets :class:`StoreUnavailableError`), and gives each batch
the earliest deadline among its items, so no caller waits past its own deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from payments_service.domain.errors import StoreUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending(Generic[T, R]):
    item: T
    deadline: float
    #: The item's result and the size of the batch it was written in.
    result: asyncio.Future[tuple[R, int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


#: write_batch(items, deadline) -> one result per item, in order. It must end by ``deadline``
#: (a loop.time() value) and raise StoreUnavailableError when it cannot write.
BatchWriter = Callable[[Sequence[T], float], Awaitable[Sequence[R]]]


class GroupCommit(Generic[T, R]):
    """Batches concurrent :meth:`submit` calls into calls of ``write_batch``."""

    def __init__(self, write_batch: BatchWriter[T, R], *, max_batch: int, name: str) -> None:
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending[T, R] | None] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name=name)

    async def submit(self, item: T, deadline: float) -> tuple[R, int]:
        """Write ``item`` with others queued at the same time; returns its result and the
        size of the batch it was written in. Raises StoreUnavailableError."""
        pending: _Pending[T, R] = _Pending(item, deadline)
        self._queue.put_nowait(pending)
        # Shielded: a caller that goes away (cancelled call) leaves its item to the writer.
        return await asyncio.shield(pending.result)

    async def close(self) -> None:
        """Write what is queued, then stop the writer."""
        self._queue.put_nowait(None)
        await self._writer

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:  # close(): this batch is the last
                    self._queue.put_nowait(None)
                    break
                batch.append(item)
            await self._write(batch)

    async def _write(self, batch: list[_Pending[T, R]]) -> None:
        now = asyncio.get_running_loop().time()
        live = []
        for pending in batch:
            if pending.deadline <= now:
                _fail(pending, StoreUnavailableError())
            else:
                live.append(pending)
        if not live:
            return
        try:
            results = await self._write_batch([p.item for p in live], min(p.deadline for p in live))
        except Exception as error:  # every waiter gets its own exception object
            if not isinstance(error, StoreUnavailableError):
                logger.exception("Unexpected error writing a batch of %d", len(live))
            for pending in live:
                failure = StoreUnavailableError()
                failure.__cause__ = error
                _fail(pending, failure)
            return
        for pending, result in zip(live, results, strict=True):
            if not pending.result.done():
                pending.result.set_result((result, len(live)))


def _fail(pending: _Pending[T, R], error: Exception) -> None:
    if not pending.result.done():
        pending.result.set_exception(error)
