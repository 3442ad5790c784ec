"""``LineBuffer``: access-log lines leave in whole-line batches, on size, on interval and at close."""

from __future__ import annotations

import os
import sys
import threading

import anyio
import pytest

from app.observability.lines import PIPE_BUF, LineBuffer, pipe_sized, stdout_sink


class Sink:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.writes.append(data)

    @property
    def lines(self) -> list[str]:
        return b"".join(self.writes).decode().splitlines()


@pytest.mark.anyio
async def test_lines_wait_until_the_buffer_holds_max_lines():
    sink = Sink()
    buffer = LineBuffer(sink, max_lines=3, interval=60)
    buffer.write("a" * 9)
    buffer.write("b" * 9)
    assert sink.writes == []
    buffer.write("c" * 9)
    assert sink.writes == [b"aaaaaaaaa\nbbbbbbbbb\nccccccccc\n"]


def test_without_an_event_loop_each_line_is_written_at_once():
    sink = Sink()
    buffer = LineBuffer(sink)
    buffer.write("one")
    assert sink.lines == ["one"]


@pytest.mark.anyio
async def test_a_waiting_line_is_flushed_after_the_interval():
    sink = Sink()
    buffer = LineBuffer(sink, interval=0.05)
    buffer.write("one")
    buffer.write("two")
    assert sink.writes == []
    with anyio.fail_after(5):
        while not sink.writes:
            await anyio.sleep(0.01)
    assert sink.writes == [b"one\ntwo\n"]  # one batch


@pytest.mark.anyio
async def test_close_flushes_and_later_lines_are_written_at_once():
    sink = Sink()
    buffer = LineBuffer(sink, interval=60)
    buffer.write("before")
    buffer.close()
    assert sink.lines == ["before"]
    buffer.write("after")  # a request cancelled late in shutdown
    assert sink.lines == ["before", "after"]


def test_a_failing_sink_drops_the_batch_without_raising(caplog):
    def broken(_data: bytes) -> None:
        raise BrokenPipeError

    buffer = LineBuffer(broken, max_lines=1)
    buffer.write("x")
    assert "could not write 1 access-log line(s)" in caplog.text


def test_batches_are_cut_at_line_ends_into_atomic_pipe_writes():
    lines = [(f"{n:04d}" * 40).encode() + b"\n" for n in range(100)]  # 161 bytes each
    data = b"".join(lines)
    pieces = pipe_sized(data, limit=1000)
    assert b"".join(pieces) == data
    assert all(len(p) <= 1000 and p.endswith(b"\n") for p in pieces)
    assert len(pieces) == 17  # 6 lines per piece


def test_a_line_longer_than_a_pipe_write_is_a_piece_of_its_own():
    data = b"short\n" + b"x" * 50 + b"\nend\n"
    assert pipe_sized(data, limit=20) == [b"short\n", b"x" * 50 + b"\n", b"end\n"]


@pytest.mark.parametrize("target", ["file", "pipe"])
def test_stdout_gets_a_batch_in_one_write_if_a_file_and_in_atomic_pieces_if_a_pipe(tmp_path, monkeypatch, target):
    batch = b"".join((f"{n:04d}" * 40).encode() + b"\n" for n in range(100))  # 16,100 bytes
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    if target == "file":
        stream = (tmp_path / "out.log").open("w")
        read_back = (tmp_path / "out.log").read_bytes
    else:
        read_fd, write_fd = os.pipe()
        stream = os.fdopen(write_fd, "w")
        read_back = None
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setattr(os, "write", counting_write)
    with stream:
        if read_back is None:
            received = []
            reader = threading.Thread(target=lambda: received.append(_read_all(read_fd, len(batch))))
            reader.start()
            stdout_sink(batch)
            reader.join(10)
        else:
            stdout_sink(batch)
    if target == "file":
        assert writes == [len(batch)] and read_back() == batch
    else:
        assert received == [batch] and len(writes) > 1 and max(writes) <= PIPE_BUF
        os.close(read_fd)


def _read_all(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += os.read(fd, size - len(data))
    return data


@pytest.mark.anyio
async def test_a_line_after_a_full_batch_still_leaves_within_the_interval():
    sink = Sink()
    buffer = LineBuffer(sink, max_lines=2, interval=0.05)
    buffer.write("one")
    buffer.write("two")  # a full batch: written at once, its timer cancelled
    assert sink.lines == ["one", "two"]
    buffer.write("three")  # the next batch's first line arms a new timer
    with anyio.fail_after(5):
        while len(sink.lines) < 3:
            await anyio.sleep(0.01)
    assert sink.lines == ["one", "two", "three"]
