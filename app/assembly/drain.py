"""Draining: the process is shutting down; /readyz says so from the first moment."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("gatehouse")


class Drain:
    """Set once, when shutdown begins (the signal, or the lifespan shutdown if no signal came)."""

    def __init__(self) -> None:
        self.started_at: float | None = None

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def start(self, reason: str) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()
            log.info("draining (%s): /readyz now answers 503; in-flight requests may finish", reason)
