"""The relay's watch for a client that leaves mid-stream: it stops the relay, and nothing else is swallowed."""

from __future__ import annotations

import asyncio

import pytest

from app.proxy import forwarding

pytestmark = pytest.mark.anyio


class Upstream:
    """Chunks handed out as the test releases them; the relay waits for each."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def __aiter__(self) -> Upstream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.queue.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class Client:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.gone = asyncio.Event()

    async def send(self, message: dict[str, object]) -> None:
        self.sent.append(message)

    async def receive(self) -> dict[str, object]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def relay(upstream: Upstream, client: Client, end: int | None = None) -> asyncio.Task[str]:
    counter = [0]
    return asyncio.ensure_future(
        forwarding._relay_rest(upstream, client.send, client.receive, "r", counter, end)  # type: ignore[arg-type]
    )


async def test_a_client_that_leaves_stops_the_relay_while_it_waits_upstream():
    upstream, client = Upstream(), Client()
    task = relay(upstream, client)
    upstream.queue.put_nowait(b"a")
    await asyncio.sleep(0.01)
    client.gone.set()
    assert await asyncio.wait_for(task, 1) == forwarding._LEFT
    assert [message["body"] for message in client.sent] == [b"a"]
    assert task.cancelling() == 0


async def test_a_relay_to_the_end_is_open_or_ended_and_leaves_no_watcher():
    upstream, client = Upstream(), Client()
    before = len(asyncio.all_tasks())
    task = relay(upstream, client)
    for chunk in (b"a", b"b", None):
        upstream.queue.put_nowait(chunk)
    assert await asyncio.wait_for(task, 1) == forwarding._OPEN
    task = relay(upstream, client, end=4)
    for chunk in (b"cc", b"dd"):
        upstream.queue.put_nowait(chunk)
    assert await asyncio.wait_for(task, 1) == forwarding._ENDED
    assert client.sent[-1] == {"type": "http.response.body", "body": b"dd", "more_body": False}
    await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == before


async def test_cancelling_the_request_still_cancels_it_while_the_client_watch_runs():
    upstream, client = Upstream(), Client()
    task = relay(upstream, client)
    await asyncio.sleep(0.01)
    task.cancel()  # the server shutting down, or an outer timeout
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_outer_cancel_that_comes_with_the_client_leaving_is_not_swallowed():
    upstream, client = Upstream(), Client()
    task = relay(upstream, client)
    await asyncio.sleep(0.01)
    client.gone.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
