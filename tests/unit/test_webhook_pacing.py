"""TargetGate: per-target in-flight cap and sliding-window rate, on a clock the test holds."""

from app.webhooks.pacing import TargetGate


def test_in_flight_cap_admits_up_to_max_then_again_after_one_leaves():
    gate = TargetGate(max_in_flight=2)
    assert gate.try_enter(0.0) and gate.try_enter(0.0)
    assert gate.saturated(0.0) and not gate.try_enter(0.0)
    gate.leave()
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
