from app.resilience.breaker import CircuitBreaker


def test_opens_after_threshold_consecutive_failures():
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10, half_open_requests=1)
    assert not breaker.record_failure(0)
    assert not breaker.record_failure(1)
    assert breaker.trials_left(1) is None  # closed: no limit
    assert breaker.record_failure(2)
    assert breaker.state(2) == "open"
    assert not breaker.allows(5) and not breaker.acquire(5)
    assert breaker.retry_after(5) == 7


def test_a_success_resets_the_consecutive_count():
    breaker = CircuitBreaker(3, 10, 1)
    breaker.record_failure(0)
    breaker.record_failure(0)
    breaker.record_success(0)
    breaker.record_failure(0)
    breaker.record_failure(0)
    assert breaker.state(0) == "closed"


def test_half_open_after_reset_timeout_lets_limited_trials_through():
    breaker = CircuitBreaker(1, 10, half_open_requests=2)
    breaker.record_failure(0)
    assert breaker.trials_left(9) == 0  # open
    assert breaker.state(10) == "half_open"
    assert breaker.trials_left(10) == 2
    assert breaker.acquire(10) and breaker.trials_left(10) == 1 and breaker.acquire(10)
    assert not breaker.acquire(10)
    assert not breaker.allows(10) and breaker.trials_left(10) == 0


def test_successful_trial_closes_failed_trial_reopens_for_a_full_period():
    breaker = CircuitBreaker(1, 10, 1)
    breaker.record_failure(0)
    breaker.acquire(10)
    breaker.record_success(10)
    assert breaker.state(10) == "closed"
    breaker.record_failure(11)
    breaker.acquire(21)
    assert breaker.record_failure(21)
    assert breaker.state(30) == "open"
    assert breaker.state(31) == "half_open"


def test_a_trial_that_never_reports_back_does_not_wedge_the_breaker():
    breaker = CircuitBreaker(1, 10, 1)
    breaker.record_failure(0)
    assert breaker.acquire(10)
    assert not breaker.allows(15)
    assert breaker.allows(20)
