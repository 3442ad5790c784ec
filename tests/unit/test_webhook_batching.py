"""GroupCommit: concurrent submits share one flush, each caller gets its own answer."""

import anyio
import pytest

from app.webhooks.batching import GroupCommit

pytestmark = pytest.mark.anyio


class Recorder:
    """A flush that records its batches and can be made to fail or to wait."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on or set()
        self.gate = anyio.Event()
        self.gate.set()

    async def __call__(self, items):
        await self.gate.wait()
        self.batches.append(list(items))
        if self.fail_on & set(items):
            raise RuntimeError(f"bad item in {list(items)}")
        return [item * 10 for item in items]


async def submit_all(commits, items, answers, errors):
    async def one(item):
        try:
            answers[item] = await commits.submit(item)
        except RuntimeError as exc:
            errors[item] = exc

    async with anyio.create_task_group() as tasks:
        for item in items:
            tasks.start_soon(one, item)


async def test_callers_arriving_during_a_flush_share_the_next_one():
    flush = Recorder()
    commits = GroupCommit(flush, max_batch=100, name="test")
    answers: dict[int, int] = {}
    async with anyio.create_task_group() as tasks:
        await tasks.start(commits.run)
        flush.gate = anyio.Event()  # the first flush waits until everyone has queued
        async with anyio.create_task_group() as senders:
            senders.start_soon(submit_all, commits, [0], answers, {})
            await anyio.sleep(0.01)
            senders.start_soon(submit_all, commits, list(range(1, 50)), answers, {})
            await anyio.sleep(0.01)
            flush.gate.set()
        tasks.cancel_scope.cancel()
    assert flush.batches == [[0], list(range(1, 50))]
    assert answers == {item: item * 10 for item in range(50)}
    assert (commits.batches, commits.items) == (2, 50)


async def test_batches_never_exceed_max_batch():
    flush = Recorder()
    commits = GroupCommit(flush, max_batch=8, name="test")
    answers: dict[int, int] = {}
    async with anyio.create_task_group() as tasks:
        await tasks.start(commits.run)
        await submit_all(commits, list(range(30)), answers, {})
        tasks.cancel_scope.cancel()
    assert max(len(batch) for batch in flush.batches) <= 8
    assert sorted(item for batch in flush.batches for item in batch) == list(range(30))
    assert answers == {item: item * 10 for item in range(30)}


async def test_a_failing_batch_is_retried_item_by_item_so_only_the_bad_item_fails():
    flush = Recorder(fail_on={7})
    commits = GroupCommit(flush, max_batch=100, name="test")
    answers: dict[int, int] = {}
    errors: dict[int, Exception] = {}
    async with anyio.create_task_group() as tasks:
        await tasks.start(commits.run)
        flush.gate = anyio.Event()
        async with anyio.create_task_group() as senders:
            senders.start_soon(submit_all, commits, list(range(10)), answers, errors)
            await anyio.sleep(0.01)
            flush.gate.set()
        tasks.cancel_scope.cancel()
    assert list(errors) == [7]
    assert answers == {item: item * 10 for item in range(10) if item != 7}
    assert [7] in flush.batches


async def test_submit_without_a_running_committer_flushes_alone():
    flush = Recorder()
    commits = GroupCommit(flush, max_batch=100, name="test")
    assert await commits.submit(3) == 30
    assert flush.batches == [[3]]


async def test_items_queued_at_shutdown_are_still_flushed_and_answered():
    flush = Recorder()
    commits = GroupCommit(flush, max_batch=100, name="test")
    answers: dict[int, int] = {}
    async with anyio.create_task_group() as senders:
        async with anyio.create_task_group() as committer:
            await committer.start(commits.run)
            flush.gate = anyio.Event()
            senders.start_soon(submit_all, commits, [1], answers, {})
            await anyio.sleep(0.01)  # 1 is being flushed; 2 and 3 queue behind it
            senders.start_soon(submit_all, commits, [2, 3], answers, {})
            await anyio.sleep(0.01)
            committer.cancel_scope.cancel()  # the committer is cancelled mid-flush
            flush.gate.set()
    assert answers == {1: 10, 2: 20, 3: 30}
    assert flush.batches == [[1], [2, 3]]


class Abort(BaseException):
    """Not an ``Exception``: what no item-by-item retry catches (a KeyboardInterrupt, say)."""


async def test_a_flush_that_aborts_wakes_its_callers_with_the_error_instead_of_leaving_them_waiting():
    async def flush(items):
        raise Abort(f"aborted with {list(items)}")

    commits = GroupCommit(flush, max_batch=100, name="test")
    outcomes: dict[int, BaseException] = {}

    async def one(item):
        try:
            await commits.submit(item)
        except Abort as exc:
            outcomes[item] = exc

    async def committer():
        try:
            async with anyio.create_task_group() as tasks:
                await tasks.start(commits.run)
                callers_may_start.set()
        except* Abort:  # the committer stops on it ...
            outcomes[0] = Abort("the committer")

    # The callers are not the committer's children (requests run in the server's tasks), so
    # nothing cancels them when it stops: only their answer can end their wait.
    callers_may_start = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as callers:
            callers.start_soon(committer)
            await callers_may_start.wait()
            callers.start_soon(one, 1)
            callers.start_soon(one, 2)
    assert sorted(outcomes) == [0, 1, 2]  # ... and both callers hear of it
