"""Group commit: concurrent callers share one transaction (and one fsync) instead of one each.

``GroupCommit(flush)`` runs a committer task (``run``, started by the lifespan).
``submit(item)`` queues the item and waits; the committer takes everything
queued (up to ``max_batch``), calls ``flush(items)`` once (one transaction that
answers per item, in order) and wakes each caller with its own answer. Callers
that arrive while a flush is running form the next batch, so batches grow with
the load and nothing waits on a timer: a lone caller costs one transaction, as
before.

A caller's answer means its transaction committed: intake acknowledges a
webhook only after ``submit`` returns. When a batch fails, each of its items is
flushed alone, so one bad item fails only its own caller. When the committer is
not running (before start-up, after shutdown), ``submit`` flushes its item
itself; at shutdown whatever is queued is still flushed and answered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar, cast

import anyio

from app.webhooks.bulk import Write
from app.webhooks.records import Claim, ClaimedDelivery, Finish, NewEvent, RecordedEvent
from app.webhooks.store import DeliveryStore

log = logging.getLogger("gatehouse.webhooks")

MAX_BATCH = 500  # items per transaction: bounds a transaction's time and its statements' size
T = TypeVar("T")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    __slots__ = ("item", "done", "result", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = anyio.Event()
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Batch ``submit`` calls into ``flush`` calls; see the module docstring."""

    def __init__(self, flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, max_batch: int, name: str) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._name = name
        self._queue: list[_Waiter[T, R]] = []
        self._wake = anyio.Event()
        self._running = False
        self.batches = 0  # flushes made: tests and benchmarks read it
        self.items = 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush batches until cancelled; a flush under way when cancelled still completes."""
        self._running = True
        task_status.started()
        try:
            while True:
                if not self._queue:
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                with anyio.CancelScope(shield=True):
                    await self._commit(batch)
        finally:
            # Shutting down: whoever already queued still gets a real answer; later callers flush alone.
            self._running = False
            with anyio.CancelScope(shield=True):
                while self._queue:
                    batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                    await self._commit(batch)

    async def submit(self, item: T) -> R:
        """Flush ``item`` with whatever else is queued; returns its answer once committed."""
        if not self._running:
            return (await self._flush([item]))[0]
        waiter: _Waiter[T, R] = _Waiter(item)
        self._queue.append(waiter)
        self._wake.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]  # set whenever error is not

    async def _commit(self, batch: list[_Waiter[T, R]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._flush([w.item for w in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done.set()
                return
            log.warning("%s: a batch of %d failed (%s); flushing its items one by one", self._name, len(batch), exc)
            for waiter in batch:
                await self._commit([waiter])
            return
        for waiter, result in zip(batch, results, strict=True):
            waiter.result = result
            waiter.done.set()


class StoreWriter:
    """The hot path's writes to the store, group-committed together: intakes, the claims made
    right after them and the dispatcher's outcomes share one transaction per batch (SQLite has
    one writer at a time, so one transaction instead of three is three times the throughput).
    """

    def __init__(self, store: DeliveryStore, *, max_batch: int = MAX_BATCH) -> None:
        self.commits: GroupCommit[Write, object] = GroupCommit(
            store.write_many, max_batch=max_batch, name="webhook store"
        )

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.commits.run(task_status=task_status)

    async def record(self, event: NewEvent) -> RecordedEvent:
        """Commit a verified event and its deliveries; returns once committed."""
        return cast(RecordedEvent, await self.commits.submit(event))

    async def claim(self, claim: Claim) -> ClaimedDelivery | None:
        return cast(ClaimedDelivery | None, await self.commits.submit(claim))

    async def finish(self, finish: Finish) -> bool:
        return cast(bool, await self.commits.submit(finish))
