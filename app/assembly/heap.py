"""Freed heap handed back to the OS once the process goes quiet after a busy spell (glibc only).

Large bodies pass through buffers of up to 256 KiB (uvloop's reads, aiohttp's buffered
pieces, the writes in progress); 64 concurrent 1 MiB responses hold 15-45 MiB of them.
glibc usually returns that space by itself once the load stops, but not always: 6 s after a
1 MiB load RSS was back at 72 MiB in 4 of 7 runs (89-101 MiB in the others), and 10-12 s after
it still stood at 76-90 MiB in 4 of 13. With ``malloc_trim(0)`` once the process has gone
quiet: 72.2-72.4 MiB 6 s after, in 7 of 7. glibc's trim threshold set in the environment
would trim on every ``free``, at 0.65x the 1 MiB requests per CPU-second (README,
**Memory**); this trims once per quiet spell, so a loaded process pays nothing and an idle
one is never woken for it.

Busy and quiet are read from the process's CPU time, so every kind of traffic counts
(proxied requests, WebSockets, webhook intake and delivery) without a counter on the hot path.

While busy, the opposite: freed buffers stay in the heap (``keep_freed_heap``). glibc's
defaults give a freed 256 KiB body piece back to the OS as soon as 512 KiB lie free at the
top of the heap (its sliding trim threshold, twice the largest block it has mmapped and
freed), so the next response's pieces are mapped in again page by page: 40 page faults per
1 MiB response, 15-20% of the gateway's CPU on 1 MiB responses. The trim when quiet is what
makes keeping them safe: once it has run (5-10 s after a load) RSS is what it was without
keeping them; until then it stays at the load's peak.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import anyio

CHECK_EVERY = 5.0  # seconds between looks at the CPU clock
QUIET_SHARE = 0.02  # under 2% of a core over an interval counts as quiet (100 ms of 5 s)

Trim = Callable[[], object]


# glibc's mallopt parameters (malloc.h) and what ``keep_freed_heap`` sets them to.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_FREE_BYTES = 32 << 20  # free space at the heap's top kept until the trim when quiet (64 x 512 KiB in flight)
MMAP_FROM_BYTES = 4 << 20  # blocks this large are mmapped and unmapped on free, as glibc does above 128 KiB
# glibc's older spelling of its tunables (``GLIBC_TUNABLES=glibc.malloc.trim_threshold=...`` is the newer).
_THRESHOLD_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def glibc_function(name: str) -> Callable[..., int] | None:
    """A glibc malloc function, or None where there is none (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # 0.26 MiB, loaded in the lifespan (keep_freed_heap)

    return getattr(ctypes.CDLL(None), name, None)


def glibc_malloc_trim() -> Trim | None:
    """glibc's ``malloc_trim(0)``, or None where there is none."""
    function = glibc_function("malloc_trim")
    return None if function is None else lambda: function(0)


def keep_freed_heap(environ: Mapping[str, str] = os.environ) -> bool:
    """Keep up to ``KEEP_FREE_BYTES`` of freed heap for reuse instead of unmapping it at once (see the docstring).

    Setting either threshold also stops glibc sliding them, so both are set. False without
    glibc, and when the environment sets a malloc threshold itself (a deployment that trades
    CPU for RSS after large bodies, README **Memory**): that choice stands.
    """
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "_threshold=" in tunables or any(name in environ for name in _THRESHOLD_VARIABLES):
        return False
    mallopt = glibc_function("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_FROM_BYTES))


class QuietTrimmer:
    """Trims once each time a busy interval (CPU above ``QUIET_SHARE``) is followed by a quiet one."""

    def __init__(
        self, find_trim: Callable[[], Trim | None] = glibc_malloc_trim, clock: Callable[[], float] = time.process_time
    ) -> None:
        self._find_trim: Callable[[], Trim | None] | None = find_trim
        self._trim: Trim | None = None
        self._clock = clock
        self._last = clock()
        self._busy = False
        self.trims = 0

    def check(self, interval: float) -> None:
        """Called every ``interval`` seconds."""
        now = self._clock()
        used, self._last = now - self._last, now
        if used > interval * QUIET_SHARE:
            self._busy = True
            return
        if not self._busy:
            return
        self._busy = False
        if self._trim is None:
            if self._find_trim is None:
                return
            self._trim, self._find_trim = self._find_trim(), None
            if self._trim is None:
                return
        self._trim()
        self.trims += 1


@asynccontextmanager
async def trim_heap_when_quiet(trimmer: QuietTrimmer | None = None, every: float = CHECK_EVERY) -> AsyncIterator[None]:
    """Runs ``trimmer`` (by default a ``QuietTrimmer`` on glibc's ``malloc_trim``) every ``every`` seconds.

    With the default trimmer, freed heap is kept while busy (``keep_freed_heap``): that trimmer gives it back.
    """
    if trimmer is None:
        keep_freed_heap()
    checker = trimmer if trimmer is not None else QuietTrimmer()

    async def watch() -> None:
        while True:
            await anyio.sleep(every)
            checker.check(every)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()
