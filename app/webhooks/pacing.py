"""Per-target pacing: how many attempts a target may have in flight, and how fast. Pure.

Each delivery target gets a ``TargetGate``: a cap on attempts in flight
(``max_in_flight``) and a sliding window (``rate_limit``: at most ``amount``
attempts begin in any ``period`` seconds; a token bucket would let twice that
through in the first period). The dispatcher
claims no delivery for a saturated target, and an attempt begins only once its
gate lets it in, so a slow or rate-limited target waits on its own gate while
the dispatcher's slots go to the others.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class TargetGate:
    """In-flight cap and sliding-window rate for one target; ``now`` is a monotonic clock in seconds."""

    max_in_flight: int
    amount: int | None = None  # attempts per period; None: no rate limit
    period: float = 1.0
    in_flight: int = 0
    _starts: deque[float] = field(default_factory=deque, repr=False)  # the last ``amount`` starts

    def _expire(self, now: float) -> None:
        while self._starts and self._starts[0] <= now - self.period:
            self._starts.popleft()

    def saturated(self, now: float) -> bool:
        """True when an attempt could not begin now (too many in flight, or the window is full)."""
        if self.in_flight >= self.max_in_flight:
            return True
        if self.amount is None:
            return False
        self._expire(now)
        return len(self._starts) >= self.amount

    def try_enter(self, now: float) -> bool:
        """Begin an attempt if the gate allows it now."""
        if self.saturated(now):
            return False
        self.in_flight += 1
        if self.amount is not None:
            self._starts.append(now)
        return True

    def leave(self) -> None:
        """An attempt finished."""
        self.in_flight -= 1

    def wait_for_token(self, now: float) -> float:
        """Seconds until the window has room (0 when it has, or there is no rate limit)."""
        if self.amount is None:
            return 0.0
        self._expire(now)
        if len(self._starts) < self.amount:
            return 0.0
        return max(0.0, self._starts[0] + self.period - now)
