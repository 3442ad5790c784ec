"""Rate-limit windows: count one request and say what remains, in one call.

``WindowCounter.hit`` counts a request against one limit item and returns
whether it fits, how many requests the window has left after it, and when the
window resets (Unix time): everything the ``RateLimit`` fields need.

In memory (the default) Gatehouse counts with its own ``MemoryWindows``, not
with the ``limits`` library's ``MemoryStorage``, which has no fast path for a
gateway that limits every request: its moving window keeps one ``Entry``
object per request in a list and inserts each new one at the front (a copy of
the whole window per request), takes an ``asyncio.Lock`` per key, starts an
expiry task per call that hops to a worker thread for a bisect, and it has no
call that counts and reports in one, so the remaining budget and reset time
cost a second call (``get_window_stats``). That made an unreached in-memory
limit cost about 18% of a request's instructions (callgrind); these windows
cost about 2%. The semantics are the library's: a fixed window opens at its
first request; a moving window admits a request if fewer than ``amount`` were
admitted in the last ``expiry`` seconds, and resets when its oldest request
leaves it. Redis keeps the library's strategies (``LimitsCounter``).

The keys are the clients' (addresses, identities), so memory is bounded twice:
a sweep every ``SWEEP_INTERVAL`` forgets windows with nothing left in them, and
each strategy holds at most ``max_windows`` windows, in least-recently-used
order. Without the cap, a client rotating keys faster than a window expires (a
``/hour`` or ``/day`` limit) grew the store without bound. When it is full, a new
key evicts the window used least recently: the key that keeps coming back stays
limited, and the one evicted (idle for longest) starts a fresh budget if it
returns -- bounded memory before exact counts, as nginx's ``limit_req`` zone.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import NamedTuple, Protocol

from limits import RateLimitItem
from limits.aio.strategies import RateLimiter


class WindowHit(NamedTuple):
    allowed: bool
    remaining: int  # requests left in the window after this one (0 when refused)
    reset: float  # Unix time when the window has room again


class WindowCounter(Protocol):
    async def hit(self, item: RateLimitItem, route: str, key: str) -> WindowHit: ...


class LimitsCounter:
    """A ``limits`` strategy (over Redis) as a ``WindowCounter``: a hit, then the window's stats."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def hit(self, item: RateLimitItem, route: str, key: str) -> WindowHit:
        allowed = await self._limiter.hit(item, route, key)
        stats = await self._limiter.get_window_stats(item, route, key)
        return WindowHit(allowed, max(0, stats.remaining) if allowed else 0, stats.reset_time)


# (route, key, amount, expiry seconds): a changed limit (after a reload) starts a budget of its own, as in ``limits``.
WindowKey = tuple[str, str, int, int]
SWEEP_INTERVAL = 60.0  # seconds between sweeps of windows nobody has used for a whole expiry
# Windows per strategy: a fixed window is ~300 bytes, so ~30 MB when full; a moving one also
# keeps up to ``amount`` admission times (8 bytes each in a deque, plus the float).
MAX_WINDOWS = 100_000


class MemoryWindows:
    """Every in-memory window of one process: ``fixed`` and ``moving`` are its two ``WindowCounter``s."""

    def __init__(self, clock: Callable[[], float] = time.time, max_windows: int = MAX_WINDOWS) -> None:
        self._clock = clock
        self._max_windows = max_windows
        # Least recently used first: a hit moves its window to the end, eviction pops the front.
        self._fixed: OrderedDict[WindowKey, list[float]] = OrderedDict()  # [reset at, count]
        self._moving: OrderedDict[WindowKey, deque[float]] = OrderedDict()  # admission times, oldest first
        self._next_sweep = clock() + SWEEP_INTERVAL
        self.fixed = _Counter(self.hit_fixed)
        self.moving = _Counter(self.hit_moving)

    def hit_fixed(self, item: RateLimitItem, route: str, key: str) -> WindowHit:
        now = self._clock()
        if now >= self._next_sweep:
            self.sweep(now)
        amount, expiry = item.amount, item.get_expiry()
        window_key = (route, key, amount, expiry)
        fixed = self._fixed
        window = fixed.get(window_key)
        if window is None:
            if len(fixed) >= self._max_windows:
                fixed.popitem(last=False)
            window = fixed[window_key] = [now + expiry, 0]
        else:
            fixed.move_to_end(window_key)
            if window[0] <= now:
                window[0], window[1] = now + expiry, 0
        if window[1] >= amount:
            return WindowHit(False, 0, window[0])
        window[1] += 1
        return WindowHit(True, amount - int(window[1]), window[0])

    def hit_moving(self, item: RateLimitItem, route: str, key: str) -> WindowHit:
        now = self._clock()
        if now >= self._next_sweep:
            self.sweep(now)
        amount, expiry = item.amount, item.get_expiry()
        window_key = (route, key, amount, expiry)
        moving = self._moving
        window = moving.get(window_key)
        if window is None:
            if len(moving) >= self._max_windows:
                moving.popitem(last=False)
            window = moving[window_key] = deque()
        else:
            moving.move_to_end(window_key)
        cutoff = now - expiry
        while window and window[0] < cutoff:
            window.popleft()
        if len(window) >= amount:
            return WindowHit(False, 0, window[0] + expiry)
        window.append(now)
        return WindowHit(True, amount - len(window), window[0] + expiry)

    def sweep(self, now: float) -> None:
        """Forget windows with nothing left in them, so that one-off keys (client addresses) do not pile up."""
        self._next_sweep = now + SWEEP_INTERVAL
        self._fixed = OrderedDict((k, w) for k, w in self._fixed.items() if w[0] > now)
        self._moving = OrderedDict((k, w) for k, w in self._moving.items() if w and w[-1] >= now - k[3])

    def __len__(self) -> int:
        return len(self._fixed) + len(self._moving)

    def clear(self) -> None:
        self._fixed.clear()
        self._moving.clear()


class _Counter:
    """One strategy's ``WindowCounter`` over ``MemoryWindows`` (its ``hit`` never waits)."""

    def __init__(self, hit: Callable[[RateLimitItem, str, str], WindowHit]) -> None:
        self._hit = hit

    async def hit(self, item: RateLimitItem, route: str, key: str) -> WindowHit:
        return self._hit(item, route, key)
