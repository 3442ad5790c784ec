from app.resilience.backoff import full_jitter


def upper_bound(_low, high):
    return high


def test_full_jitter_ceiling_doubles_then_stops_at_the_cap():
    ceilings = [full_jitter(n, 0.1, 0.5, upper_bound) for n in range(1, 6)]
    assert ceilings == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_full_jitter_draws_from_zero_to_the_ceiling():
    seen = []
    full_jitter(3, 0.1, 1.0, lambda low, high: seen.append((low, high)) or low)
    assert seen == [(0.0, 0.4)]


def test_full_jitter_spreads_real_draws_over_the_range():
    draws = [full_jitter(2, 0.1, 1.0) for _ in range(500)]
    assert all(0 <= d <= 0.2 for d in draws)
    assert min(draws) < 0.05 and max(draws) > 0.15
