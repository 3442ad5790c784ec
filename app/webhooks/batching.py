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
from collections import deque
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
    __slots__ = ("item", "answered", "result", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.answered = False
        self.result: R | None = None
        self.error: BaseException | None = None


class _Batch(Generic[T, R]):
    """Waiters flushed together, woken by one event: an ``anyio.Event`` per caller cost about
    5% of intake's CPU (each one asks sniffio for the running library, which asks asyncio for
    the current task), so a batch of 32 callers now makes one."""

    __slots__ = ("waiters", "done")

    def __init__(self) -> None:
        self.waiters: list[_Waiter[T, R]] = []
        self.done = anyio.Event()


class GroupCommit(Generic[T, R]):
    """Batch ``submit`` calls into ``flush`` calls; see the module docstring."""

    def __init__(self, flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, max_batch: int, name: str) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._name = name
        self._queue: deque[_Batch[T, R]] = deque()  # the last one is still open to new callers
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
                with anyio.CancelScope(shield=True):
                    await self._commit_next()
        finally:
            # Shutting down: whoever already queued still gets a real answer; later callers flush alone.
            self._running = False
            with anyio.CancelScope(shield=True):
                while self._queue:
                    await self._commit_next()

    async def submit(self, item: T) -> R:
        """Flush ``item`` with whatever else is queued; returns its answer once committed."""
        if not self._running:
            return (await self._flush([item]))[0]
        if not self._queue or len(self._queue[-1].waiters) >= self._max_batch:
            self._queue.append(_Batch())
        batch = self._queue[-1]
        waiter: _Waiter[T, R] = _Waiter(item)
        batch.waiters.append(waiter)
        self._wake.set()
        await batch.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]  # set whenever error is not

    async def _commit_next(self) -> None:
        batch = self._queue.popleft()  # closed to new callers from here: they open the next one
        try:
            await self._commit(batch.waiters)
        except BaseException as exc:  # not an item's failure (those are answered): none may wait forever
            for waiter in batch.waiters:
                if not waiter.answered:
                    waiter.error = exc
            raise
        finally:
            batch.done.set()

    async def _commit(self, waiters: list[_Waiter[T, R]]) -> None:
        self.batches += 1
        self.items += len(waiters)
        try:
            results = await self._flush([w.item for w in waiters])
        except Exception as exc:
            if len(waiters) == 1:
                waiters[0].error, waiters[0].answered = exc, True
                return
            log.warning("%s: a batch of %d failed (%s); flushing its items one by one", self._name, len(waiters), exc)
            for waiter in waiters:
                await self._commit([waiter])
            return
        for waiter, result in zip(waiters, results, strict=True):
            waiter.result, waiter.answered = result, True


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
