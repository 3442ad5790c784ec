"""Buffered line output for the access log: nginx's ``access_log ... buffer= flush=``, in Python.

One ``write()`` syscall per request line cost the gateway about a sixth of its
requests/s. ``LineBuffer`` collects finished lines and hands them to its sink
in batches: when ``max_lines`` are waiting, ``interval`` seconds after the
first waiting line, and on ``close()`` (the lifespan's shutdown, after uvicorn
has waited for in-flight requests). After ``close()`` it writes through, so a
line from a request cancelled late in shutdown is still written.

When stdout is a pipe, each batch is split into pieces of at most ``PIPE_BUF``
bytes that end on a line boundary: a write that size to a pipe is atomic, so
the lines of several ``--workers`` sharing one stdout never interleave
mid-line (as with one write per line before). A regular file takes the batch
in one write: Linux moves a shared file offset atomically per write. Lines
arrive redacted (``app.observability.access``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import stat
import sys
from collections.abc import Callable

Sink = Callable[[bytes], None]

log = logging.getLogger("gatehouse")

PIPE_BUF = getattr(select, "PIPE_BUF", 4096)
DEFAULT_MAX_LINES = 128  # about 32 KiB of JSON access-log lines
DEFAULT_INTERVAL = 0.1  # seconds a line may wait for company


def stdout_sink(data: bytes) -> None:
    """Write ``data`` to the process's stdout as it is now (pytest swaps ``sys.stdout``)."""
    stream = sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()
        return
    for piece in [data] if stat.S_ISREG(os.fstat(fd).st_mode) else pipe_sized(data):
        view = memoryview(piece)
        while view:
            written = os.write(fd, view)
            view = view[written:]


class LineBuffer:
    """Lines in, batches out: ``write`` is an append; the sink sees whole lines only."""

    def __init__(
        self,
        sink: Sink = stdout_sink,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._sink = sink
        self._interval = interval
        self._pending: list[str] = []  # lines without their newlines
        self._due = max_lines  # flush when this many are pending (1 once closed: write through)
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    def write(self, line: str) -> None:
        """Queue one line (without its newline); a call costs only an append and a length test."""
        pending = self._pending
        pending.append(line)
        if len(pending) == 1 or len(pending) >= self._due:
            self._added()

    def _added(self) -> None:
        """The first line of a batch, or the last: flush if due, else make sure a timer will."""
        if len(self._pending) >= self._due:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop to wake us later: write now
                self.flush()
                return
            self._timer = loop.call_later(self._interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Hand every waiting line to the sink now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = self._pending
        if not pending:
            return
        text = "\n".join(pending) + "\n"
        count = len(pending)
        pending.clear()
        try:
            self._sink(text.encode("utf-8", "replace"))
        except Exception:  # as logging's handlers do: a broken stdout must not fail requests
            log.exception("could not write %d access-log line(s)", count)

    def close(self) -> None:
        """Flush, and write every later line straight through."""
        self.closed = True
        self._due = 1
        self.flush()


def pipe_sized(data: bytes, limit: int = PIPE_BUF) -> list[bytes]:
    """``data`` (newline-terminated lines) cut at line ends into pieces of at most ``limit`` bytes.

    A single line longer than ``limit`` is a piece of its own.
    """
    pieces = []
    start, end = 0, len(data)
    while end - start > limit:
        cut = data.rfind(b"\n", start, start + limit)
        if cut < 0:  # one long line: up to its end
            cut = data.find(b"\n", start + limit)
            if cut < 0:
                break
        pieces.append(data[start : cut + 1])
        start = cut + 1
    if start < end:
        pieces.append(data[start:])
    return pieces
