"""``CoalescedWrites``: the writes of one event-loop turn leave in one write, in order, never after close."""

from __future__ import annotations

import asyncio

import pytest

from app.serving.coalescing import FLUSH_BYTES, CoalescedWrites

pytestmark = pytest.mark.anyio


class Transport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, data: list[bytes]) -> None:
        self.calls.append(("writelines", list(data)))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_writes_of_one_turn_go_out_as_one_write_at_its_end():
    transport = Transport()
    writes = CoalescedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writes.write(b"HTTP/1.1 200 OK\r\n\r\n")
    writes.write(b"")
    writes.write(b"body")
    assert transport.calls == []
    await next_turn()
    assert transport.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]
    writes.write(b"later")
    await next_turn()
    assert transport.calls[-1] == ("write", b"later")


async def test_a_large_write_goes_out_at_once_without_being_copied():
    transport = Transport()
    writes = CoalescedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    big = b"x" * FLUSH_BYTES
    writes.write(b"head")
    writes.write(big)
    assert transport.calls == [("writelines", [b"head", big])]
    await next_turn()
    assert len(transport.calls) == 1


async def test_close_sends_what_is_held_first():
    transport = Transport()
    writes = CoalescedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writes.write(b"last")
    writes.close()
    assert transport.calls == [("write", b"last"), ("close", None)]
    assert writes.is_closing()


async def test_nothing_is_written_to_a_transport_closed_in_the_same_turn():
    transport = Transport()
    writes = CoalescedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    writes.write(b"never")
    transport.closing = True  # the client went away
    await next_turn()
    assert transport.calls == []


async def test_everything_else_is_the_transport_s():
    transport = Transport()
    writes = CoalescedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    assert writes.get_extra_info("peername") == "info:peername"
