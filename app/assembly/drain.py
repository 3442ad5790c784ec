"""Draining: the process is shutting down; /readyz says so from the first moment."""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("gatehouse")


class Drain:
    """Set once, when shutdown begins (the signal, or the lifespan shutdown if no signal came)."""

    def __init__(self) -> None:
        self.started_at: float | None = None
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def start(self, reason: str) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()
            log.info("draining (%s): /readyz now answers 503; in-flight requests may finish", reason)
            if self._event is not None and self._loop is not None:
                # start() may run in a signal handler, between any two steps of the loop.
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        """Return once draining has started (open WebSockets wait here to close in time)."""
        if self.started_at is not None:
            return
        if self._event is None:
            self._event = asyncio.Event()
            self._loop = asyncio.get_running_loop()
        await self._event.wait()
