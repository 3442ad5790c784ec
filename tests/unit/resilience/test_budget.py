from app.resilience.budget import RetryBudget


def spend(budget, n, now):
    return sum(budget.try_spend(now) for _ in range(n))


def test_floor_allows_retries_on_a_quiet_route():
    budget = RetryBudget(ratio=0.2, min_per_second=1, window=10)
    assert spend(budget, 20, now=0.0) == 10


def test_retries_are_capped_at_the_ratio_of_requests():
    budget = RetryBudget(ratio=0.2, min_per_second=0, window=10)
    for _ in range(100):
        budget.record_request(0.5)
    assert spend(budget, 100, now=0.5) == 20


def test_old_buckets_fall_out_of_the_window():
    budget = RetryBudget(ratio=0.5, min_per_second=0, window=10)
    for _ in range(10):
        budget.record_request(0.0)
    assert spend(budget, 5, now=0.0) == 5
    assert not budget.try_spend(9.9)
    # Ten seconds on, both the requests and the retries have aged out.
    for _ in range(4):
        budget.record_request(10.5)
    assert spend(budget, 5, now=10.5) == 2
    assert budget.snapshot(10.5) == {"requests": 4, "retries": 2, "window_seconds": 10}


def test_a_long_idle_gap_clears_everything():
    budget = RetryBudget(ratio=1.0, min_per_second=0, window=5)
    budget.record_request(0)
    budget.try_spend(0)
    assert budget.snapshot(1000) == {"requests": 0, "retries": 0, "window_seconds": 5}
