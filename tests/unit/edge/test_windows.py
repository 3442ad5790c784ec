"""The in-memory rate-limit windows against a fake clock: what they admit, what remains, when they reset."""

from __future__ import annotations

import pytest
from limits import parse

from app.edge.windows import SWEEP_INTERVAL, MemoryWindows, WindowHit

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_moving_window_admits_amount_in_any_expiry_seconds_and_resets_when_its_oldest_leaves():
    clock = Clock()
    windows = MemoryWindows(clock)
    three_a_minute = parse("3/minute")
    start = clock.now
    hits = []
    for step in (0, 10, 20):
        clock.now = start + step
        hits.append(windows.hit_moving(three_a_minute, "api", "k"))
    assert hits == [
        WindowHit(True, 2, start + 60),
        WindowHit(True, 1, start + 60),
        WindowHit(True, 0, start + 60),
    ]
    clock.now = start + 59
    assert windows.hit_moving(three_a_minute, "api", "k") == WindowHit(False, 0, start + 60)
    clock.now = start + 61  # the first request has left the window; the one at +10 is now the oldest
    assert windows.hit_moving(three_a_minute, "api", "k") == WindowHit(True, 0, start + 70)
    assert windows.hit_moving(three_a_minute, "api", "k") == WindowHit(False, 0, start + 70)


def test_a_refused_request_takes_nothing_from_a_moving_window():
    clock = Clock()
    windows = MemoryWindows(clock)
    one_a_second = parse("1/second")
    assert windows.hit_moving(one_a_second, "api", "k").allowed
    for _ in range(5):
        assert not windows.hit_moving(one_a_second, "api", "k").allowed
    clock.now += 1.5
    assert windows.hit_moving(one_a_second, "api", "k").allowed


def test_a_fixed_window_opens_at_its_first_request_and_starts_over_when_it_ends():
    clock = Clock()
    windows = MemoryWindows(clock)
    two_a_minute = parse("2/minute")
    start = clock.now
    assert windows.hit_fixed(two_a_minute, "api", "k") == WindowHit(True, 1, start + 60)
    clock.now = start + 50
    assert windows.hit_fixed(two_a_minute, "api", "k") == WindowHit(True, 0, start + 60)
    assert windows.hit_fixed(two_a_minute, "api", "k") == WindowHit(False, 0, start + 60)
    clock.now = start + 60
    assert windows.hit_fixed(two_a_minute, "api", "k") == WindowHit(True, 1, start + 120)


def test_routes_keys_and_limits_each_have_their_own_window():
    windows = MemoryWindows(Clock())
    one = parse("1/minute")
    assert windows.hit_moving(one, "api", "a").allowed
    assert windows.hit_moving(one, "api", "b").allowed
    assert windows.hit_moving(one, "other", "a").allowed
    assert windows.hit_moving(parse("2/minute"), "api", "a").allowed  # a reloaded, changed limit: a new budget
    assert not windows.hit_moving(one, "api", "a").allowed


def test_windows_nobody_used_for_their_whole_expiry_are_swept():
    clock = Clock()
    windows = MemoryWindows(clock)
    per_second, per_hour = parse("5/second"), parse("5/hour")
    for n in range(100):
        windows.hit_moving(per_second, "api", f"203.0.113.{n}")
        windows.hit_fixed(per_second, "api", f"203.0.113.{n}")
    windows.hit_moving(per_hour, "api", "kept")
    windows.hit_fixed(per_hour, "api", "kept")
    assert len(windows) == 202
    clock.now += SWEEP_INTERVAL
    windows.hit_moving(per_hour, "api", "kept")  # a hit after the interval sweeps
    assert len(windows) == 2
    assert windows.hit_moving(per_hour, "api", "kept").remaining == 2  # the swept keys took nothing with them


@pytest.mark.parametrize("strategy", ["fixed", "moving"])
def test_rotating_keys_within_an_expiry_keeps_the_store_bounded_and_an_active_key_limited(strategy):
    clock = Clock()
    windows = MemoryWindows(clock, max_windows=100)
    hit = windows.hit_fixed if strategy == "fixed" else windows.hit_moving
    five_an_hour = parse("5/hour")
    refused = 0
    for n in range(1000):  # one-off keys (spoofed identities), none of them expired: no sweep frees them
        clock.now += 0.5
        hit(five_an_hour, "api", f"rotated-{n}")
        if n % 10 == 0:  # the key that keeps coming back is the most recently used, never the one evicted
            refused += not hit(five_an_hour, "api", "active").allowed
        assert len(windows) <= 100
    assert refused == 100 - 5
    assert not hit(five_an_hour, "api", "active").allowed


async def test_the_counters_are_the_windows_behind_the_strategy_names():
    clock = Clock()
    windows = MemoryWindows(clock)
    item = parse("1/minute")
    assert await windows.moving.hit(item, "api", "k") == WindowHit(True, 0, clock.now + 60)
    assert (await windows.moving.hit(item, "api", "k")).allowed is False
    assert (await windows.fixed.hit(item, "api", "k")).allowed is True  # a strategy of its own
