"""TargetGate: per-target in-flight cap and sliding-window rate, on a clock the test holds."""

from app.resilience.breaker import CircuitBreaker
from app.webhooks.pacing import TargetGate


def test_in_flight_cap_admits_up_to_max_then_again_after_one_leaves():
    gate = TargetGate(max_in_flight=2)
    assert gate.try_enter(0.0) and gate.try_enter(0.0)
    assert gate.saturated(0.0) and not gate.try_enter(0.0)
    gate.leave(0.0, ok=True)
    assert gate.try_enter(0.0)


def test_rate_limit_admits_amount_per_period_in_any_window():
    gate = TargetGate(max_in_flight=100, amount=3, period=1.0)
    starts = [t / 4 for t in range(16) if gate.try_enter(t / 4)]  # a try every 0.25 s
    assert starts == [0.0, 0.25, 0.5, 1.0, 1.25, 1.5, 2.0, 2.25, 2.5, 3.0, 3.25, 3.5]
    for i, first in enumerate(starts):
        assert len([s for s in starts[i:] if s - first < 1.0]) <= 3


def test_wait_for_token_says_when_the_window_has_room():
    gate = TargetGate(max_in_flight=100, amount=2, period=1.0)
    assert gate.wait_for_token(0.0) == 0.0
    gate.try_enter(0.0)
    gate.try_enter(0.25)
    assert gate.wait_for_token(0.5) == 0.5
    assert gate.wait_for_token(1.0) == 0.0
    assert TargetGate(max_in_flight=1).wait_for_token(5.0) == 0.0


def test_a_breaker_opens_on_consecutive_failures_and_lets_one_trial_through_after_its_timeout():
    gate = TargetGate(max_in_flight=100, breaker=CircuitBreaker(3, reset_timeout=10.0, half_open_requests=1))
    for _ in range(3):
        assert gate.try_enter(0.0)
        gate.leave(0.0, ok=False)
    assert gate.saturated(1.0) and not gate.try_enter(1.0)  # open: nothing goes to the target
    assert gate.wait_for_token(1.0) == 9.0  # when a trial may go
    assert not gate.saturated(10.0) and gate.try_enter(10.0)  # half-open: one trial ...
    assert gate.saturated(10.0) and not gate.try_enter(10.0)  # ... and only one
    gate.leave(10.5, ok=True)  # it worked: closed
    assert [gate.try_enter(11.0) for _ in range(5)] == [True] * 5


def test_a_failed_trial_opens_the_breaker_again_and_an_unreported_attempt_counts_for_nothing():
    gate = TargetGate(max_in_flight=100, breaker=CircuitBreaker(1, reset_timeout=5.0, half_open_requests=1))
    assert gate.try_enter(0.0)
    gate.leave(0.0, ok=None)  # interrupted (shutdown): neither a success nor a failure
    assert gate.try_enter(0.0)
    gate.leave(0.0, ok=False)
    assert gate.try_enter(5.0)
    gate.leave(5.0, ok=False)  # the trial failed: open for a full period again
    assert gate.saturated(9.0) and gate.wait_for_token(9.0) == 1.0
    assert gate.in_flight == 0


def test_leave_says_when_the_gate_opened_up():
    gate = TargetGate(max_in_flight=2, breaker=CircuitBreaker(1, reset_timeout=5.0, half_open_requests=1))
    assert gate.try_enter(0.0) and gate.try_enter(0.0)
    assert gate.leave(0.0, ok=True)  # it was full
    assert not gate.leave(0.0, ok=False)  # not full, and now open
    assert gate.try_enter(5.0)  # the trial
    assert gate.leave(5.0, ok=True)  # it closed the breaker
    assert gate.try_enter(6.0) and not gate.leave(6.0, ok=True)  # nothing changed


def test_leave_says_so_once_when_half_a_large_cap_is_free_again():
    gate = TargetGate(max_in_flight=10)
    for _ in range(10):
        assert gate.try_enter(0.0)
    opened = [gate.leave(0.0, ok=True) for _ in range(10)]
    assert opened == [False] * 4 + [True] + [False] * 5  # at 5 in flight: worth a claim of five


def test_room_is_what_the_cap_the_window_and_the_breaker_leave():
    gate = TargetGate(max_in_flight=4, amount=3, period=1.0)
    assert gate.room(0.0) == 3  # the window
    assert gate.try_enter(0.0) and gate.room(0.0) == 2
    assert gate.try_enter(0.5) and gate.try_enter(0.5) and gate.room(0.5) == 0 and gate.saturated(0.5)
    assert gate.room(1.0) == 1  # the first start left the window; the cap leaves one more
    gate = TargetGate(max_in_flight=4, breaker=CircuitBreaker(1, reset_timeout=5.0, half_open_requests=2))
    assert gate.room(0.0) == 4
    assert gate.try_enter(0.0)
    gate.leave(0.0, ok=False)
    assert gate.room(1.0) == 0  # open
    assert gate.room(5.0) == 2  # half-open: its trials
    assert gate.try_enter(5.0) and gate.room(5.0) == 1
