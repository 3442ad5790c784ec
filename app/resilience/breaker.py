"""A per-target circuit breaker: closed, open, half-open (pure; the clock is passed in).

Closed counts consecutive failures; at ``failure_threshold`` it opens. Open
refuses everything for ``reset_timeout`` seconds, then lets up to
``half_open_requests`` trial requests through (half-open). A trial that
succeeds closes the breaker; one that fails opens it again for a full period.
"""

from __future__ import annotations

from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failure_threshold: int, reset_timeout: float, half_open_requests: int) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_requests = half_open_requests
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0  # trial requests let through while half-open
        self._trial_at = 0.0

    def state(self, now: float) -> BreakerState:
        if self._state == "open" and now - self._opened_at >= self.reset_timeout:
            self._state = "half_open"
            self._trials = 0
        elif self._state == "half_open" and self._trials and now - self._trial_at >= self.reset_timeout:
            self._trials = 0  # a trial that never reported back (its client left) must not wedge the breaker
        return self._state

    def allows(self, now: float) -> bool:
        """Whether a request may go to this target now (without claiming a trial slot)."""
        left = self.trials_left(now)
        return left is None or left > 0

    def trials_left(self, now: float) -> int | None:
        """How many requests it would let through now: None when closed (no limit), 0 while open."""
        state = self.state(now)
        if state == "closed":
            return None
        return self.half_open_requests - self._trials if state == "half_open" else 0

    def acquire(self, now: float) -> bool:
        """Claim permission for one request; half-open hands out a limited number of trials."""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "half_open" and self._trials < self.half_open_requests:
            self._trials += 1
            self._trial_at = now
            return True
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until an open breaker lets a trial through (0 when it would now)."""
        if self.state(now) != "open":
            return 0.0
        return max(0.0, self.reset_timeout - (now - self._opened_at))

    def record_success(self, now: float) -> None:
        if self.state(now) == "half_open":
            self._state = "closed"
        self._failures = 0

    def record_failure(self, now: float) -> bool:
        """Count a failure; ``True`` if this one opened the breaker."""
        state = self.state(now)
        if state == "open":
            return False
        self._failures += 1
        if state == "half_open" or self._failures >= self.failure_threshold:
            self._state = "open"
            self._opened_at = now
            self._failures = 0
            return True
        return False
