"""The retry budget: retries may add at most ``ratio`` extra load per route (pure).

Counted over a sliding window of one-second buckets, as Finagle and Envoy
do: a retry is allowed while ``retries < ratio * requests + min_per_second *
window``. The floor lets a quiet route still retry; the ratio stops retries
from multiplying load when every request is failing.
"""

from __future__ import annotations

import math


class RetryBudget:
    def __init__(self, ratio: float, min_per_second: float, window: int = 10) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._requests = [0] * window
        self._retries = [0] * window
        self._second = 0  # the second the newest bucket counts

    def _advance(self, now: float) -> int:
        second = math.floor(now)
        if second != self._second:
            for skipped in range(self._second + 1, min(second, self._second + self.window) + 1):
                index = skipped % self.window
                self._requests[index] = self._retries[index] = 0
            self._second = second
        return second % self.window

    def record_request(self, now: float) -> None:
        """Count an original request (not a retry)."""
        self._requests[self._advance(now)] += 1

    def try_spend(self, now: float) -> bool:
        """Take one retry from the budget, or ``False`` if it is spent."""
        index = self._advance(now)
        allowed = self.ratio * sum(self._requests) + self.min_per_second * self.window
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[index] += 1
        return True

    def snapshot(self, now: float) -> dict[str, int]:
        self._advance(now)
        return {"requests": sum(self._requests), "retries": sum(self._retries), "window_seconds": self.window}
