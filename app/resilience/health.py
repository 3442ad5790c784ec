"""Target health, passive (failures seen by real traffic) and active (checks) (pure).

Passive: a target that fails ``max_failures`` times within ``window`` seconds
is ejected for a cool-down that doubles on each repeat ejection, up to
``max_ejection``; a target that stays in for ``max_ejection`` seconds after
its return starts again from the first cool-down. Whether ejecting is allowed
at all (never the last healthy target) is the pool's decision, not this one's.

Active: a target with a health check starts ``unknown``; its first passing
check makes it healthy, later transitions need ``healthy_threshold`` passes or
``unhealthy_threshold`` failures in a row.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

ActiveState = Literal["unknown", "healthy", "unhealthy"]


class PassiveHealth:
    def __init__(self, max_failures: int, window: float, ejection: float, max_ejection: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self.ejection = ejection
        self.max_ejection = max_ejection
        self._failures: deque[float] = deque()
        self.ejected_until = 0.0
        self.ejections = 0  # consecutive ejections, for the exponential cool-down
        self._returned_at = 0.0

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def record_failure(self, now: float) -> bool:
        """Count a failure; ``True`` if the target has now failed enough to be ejected."""
        if self.max_failures == 0 or self.ejected(now):
            return False
        failures = self._failures
        failures.append(now)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return len(failures) >= self.max_failures

    def failures(self, now: float) -> int:
        return sum(1 for at in self._failures if at > now - self.window)

    def eject(self, now: float) -> float:
        """Eject the target; returns the cool-down in seconds."""
        if self.ejections and now - self._returned_at >= self.max_ejection:
            self.ejections = 0  # it behaved for a long while: start over
        self.ejections += 1
        cool_down = min(self.max_ejection, self.ejection * 2.0 ** (self.ejections - 1))
        self.ejected_until = self._returned_at = now + cool_down
        self._failures.clear()
        return cool_down

    def spare(self) -> None:
        """Failures reached the limit but the target stays in (it is the last one): start counting anew."""
        self._failures.clear()


class ActiveHealth:
    def __init__(self, healthy_threshold: int, unhealthy_threshold: int) -> None:
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.state: ActiveState = "unknown"
        self._passes = 0
        self._fails = 0

    def record(self, passed: bool) -> bool:
        """Record one check; ``True`` if the state changed."""
        before = self.state
        if passed:
            self._passes += 1
            self._fails = 0
            if self.state == "unknown" or (self.state == "unhealthy" and self._passes >= self.healthy_threshold):
                self.state = "healthy"
        else:
            self._fails += 1
            self._passes = 0
            if self.state == "unknown" or (self.state == "healthy" and self._fails >= self.unhealthy_threshold):
                self.state = "unhealthy"
        return self.state != before
