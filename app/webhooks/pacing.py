"""Per-target pacing: how many attempts a target may have in flight, how fast, and whether at all. Pure.

Each delivery target gets a ``TargetGate``: a cap on attempts in flight
(``max_in_flight``), a sliding window (``rate_limit``: at most ``amount``
attempts begin in any ``period`` seconds; a token bucket would let twice that
through in the first period) and, unless the target turns it off, a circuit
breaker (the routes' ``app.resilience.breaker``): after ``failure_threshold``
attempts in a row fail (no answer, a 5xx or a 429), no attempt goes to the
target for ``reset_timeout`` seconds, then one trial does. The dispatcher
claims no delivery for a saturated target, and an attempt begins only once its
gate lets it in, so a slow, rate-limited or down target waits on its own gate
while the dispatcher's slots go to the others; a delivery the gate refuses is
handed back uncounted, so a target that is down spends no one's retries.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from app.config.webhooks import DeliveryTarget, rate_limit_per_second
from app.resilience.breaker import CircuitBreaker


@dataclass
class TargetGate:
    """In-flight cap and sliding-window rate for one target; ``now`` is a monotonic clock in seconds."""

    max_in_flight: int
    amount: int | None = None  # attempts per period; None: no rate limit
    period: float = 1.0
    breaker: CircuitBreaker | None = None
    in_flight: int = 0
    _starts: deque[float] = field(default_factory=deque, repr=False)  # the last ``amount`` starts

    @classmethod
    def for_target(cls, target: DeliveryTarget, *, default_in_flight: int) -> TargetGate:
        amount, period = rate_limit_per_second(target.rate_limit) if target.rate_limit else (None, 1.0)
        settings = target.circuit_breaker
        breaker = (
            CircuitBreaker(settings.failure_threshold, settings.reset_timeout, settings.half_open_requests)
            if settings
            else None
        )
        return cls(target.max_in_flight or default_in_flight, amount, period, breaker)

    def _expire(self, now: float) -> None:
        while self._starts and self._starts[0] <= now - self.period:
            self._starts.popleft()

    def room(self, now: float) -> int:
        """How many attempts could begin now: what the in-flight cap, the window and the breaker leave."""
        room = self.max_in_flight - self.in_flight
        if room > 0 and self.breaker is not None and (trials := self.breaker.trials_left(now)) is not None:
            room = min(room, trials)
        if room > 0 and self.amount is not None:
            self._expire(now)
            room = min(room, self.amount - len(self._starts))
        return max(room, 0)

    def saturated(self, now: float) -> bool:
        """True when an attempt could not begin now (too many in flight, the window full, the breaker open)."""
        return self.room(now) == 0

    def try_enter(self, now: float) -> bool:
        """Begin an attempt if the gate allows it now."""
        if self.saturated(now):
            return False
        if self.breaker is not None and not self.breaker.acquire(now):  # (allows() said yes: a trial slot)
            return False
        self.in_flight += 1
        if self.amount is not None:
            self._starts.append(now)
        return True

    def leave(self, now: float, *, ok: bool | None) -> bool:
        """An attempt finished: ``ok`` says whether the target answered well (None: it was cut short).

        True when the gate just opened up for a batch: half its in-flight cap is free again (for a cap
        of 1 or 2, as soon as it is not full), or a trial closed its breaker. Deliveries waiting for it
        are then worth a claim; waking the poller at every attempt's end would claim them one by one."""
        self.in_flight -= 1
        opened = self.max_in_flight - self.in_flight == (self.max_in_flight + 1) // 2
        if self.breaker is None or ok is None:
            return opened
        if not ok:
            self.breaker.record_failure(now)
            return opened
        was_closed = self.breaker.state(now) == "closed"
        self.breaker.record_success(now)
        return opened or not was_closed

    def wait_for_token(self, now: float) -> float:
        """Seconds until an attempt may begin as far as rate and breaker go (0: now)."""
        closed_in = self.breaker.retry_after(now) if self.breaker is not None else 0.0
        if self.amount is None:
            return closed_in
        self._expire(now)
        if len(self._starts) < self.amount:
            return closed_in
        return max(closed_in, self._starts[0] + self.period - now)
