import random

import pytest

from app.config.webhooks import DEFAULT_SCHEDULE, RetryPolicy
from app.webhooks.schedule import (
    MIN_RETRY_AFTER,
    Dead,
    Delivered,
    Retry,
    backoff_delay,
    classify,
)

NOW = 1_700_000_000.0
POLICY = RetryPolicy()
NO_JITTER = RetryPolicy(jitter=0)


class FixedRandom(random.Random):
    """uniform() returns the low or high end, to pin jitter at its extremes."""

    def __init__(self, end: str):
        super().__init__(0)
        self.end = end

    def uniform(self, a, b):
        return a if self.end == "low" else b


def test_default_schedule_without_jitter():
    delays = [backoff_delay(NO_JITTER, n) for n in range(1, 8)]
    assert delays == list(DEFAULT_SCHEDULE)
    assert backoff_delay(NO_JITTER, 8) is None


def test_jitter_stays_within_bounds():
    rng = random.Random(42)
    for attempt, base in enumerate(DEFAULT_SCHEDULE, start=1):
        samples = [backoff_delay(POLICY, attempt, rng=rng) for _ in range(200)]
        assert all(base * 0.8 <= s <= base * 1.2 for s in samples)
        assert len(set(samples)) > 1
    assert backoff_delay(POLICY, 1, rng=FixedRandom("low")) == pytest.approx(4.0)
    assert backoff_delay(POLICY, 1, rng=FixedRandom("high")) == pytest.approx(6.0)


def test_attempts_start_at_one():
    with pytest.raises(ValueError):
        backoff_delay(POLICY, 0)


def test_custom_schedule_and_empty_schedule():
    policy = RetryPolicy(schedule=[1, 2], jitter=0)
    assert [backoff_delay(policy, n) for n in (1, 2, 3)] == [1, 2, None]
    assert backoff_delay(RetryPolicy(schedule=[]), 1) is None


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status):
    assert classify(POLICY, 1, status=status, now=NOW) == Delivered()


def test_2xx_is_delivered_even_on_the_last_attempt():
    assert classify(POLICY, POLICY.max_attempts, status=200, now=NOW) == Delivered()


def test_410_is_dead_at_once():
    assert classify(POLICY, 1, status=410, now=NOW) == Dead("HTTP 410 Gone")


@pytest.mark.parametrize("status", [300, 400, 401, 404, 408, 409, 422, 500, 502, 504])
def test_other_statuses_follow_the_schedule(status):
    outcome = classify(NO_JITTER, 2, status=status, now=NOW)
    assert outcome == Retry(300.0, f"HTTP {status}")


def test_no_response_follows_the_schedule_with_the_error():
    outcome = classify(NO_JITTER, 1, status=None, error="connect timeout", now=NOW)
    assert outcome == Retry(5.0, "connect timeout")
    assert classify(NO_JITTER, 1, status=None, now=NOW) == Retry(5.0, "no response")


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_on_429_and_503(status):
    outcome = classify(NO_JITTER, 1, status=status, retry_after="120", now=NOW)
    assert isinstance(outcome, Retry)
    assert outcome.delay == 120.0
    assert "Retry-After 120" in outcome.reason


def test_retry_after_is_bounded_below_and_above():
    low = classify(POLICY, 1, status=429, retry_after="0", now=NOW)
    assert isinstance(low, Retry) and low.delay == MIN_RETRY_AFTER
    capped = RetryPolicy(retry_after_cap=60)
    high = classify(capped, 1, status=503, retry_after="86400", now=NOW)
    assert isinstance(high, Retry) and high.delay == 60


def test_retry_after_is_ignored_on_other_statuses_and_when_unparseable():
    assert classify(NO_JITTER, 1, status=500, retry_after="120", now=NOW) == Retry(5.0, "HTTP 500")
    assert classify(NO_JITTER, 1, status=429, retry_after="later", now=NOW) == Retry(5.0, "HTTP 429")
    assert classify(NO_JITTER, 1, status=429, now=NOW) == Retry(5.0, "HTTP 429")


def test_failures_retry_until_the_schedule_is_exhausted_then_dead():
    outcomes = [classify(POLICY, n, status=500, now=NOW) for n in range(1, POLICY.max_attempts + 1)]
    assert all(isinstance(o, Retry) for o in outcomes[:-1])
    assert outcomes[-1] == Dead(f"gave up after attempt {POLICY.max_attempts}: HTTP 500")


def test_retry_after_does_not_extend_the_number_of_attempts():
    last = POLICY.max_attempts
    assert classify(POLICY, last, status=429, retry_after="5", now=NOW) == Dead(
        f"gave up after attempt {last}: HTTP 429"
    )


def test_empty_schedule_means_one_attempt():
    assert classify(RetryPolicy(schedule=[]), 1, status=None, error="refused", now=NOW) == Dead(
        "gave up after attempt 1: refused"
    )
