from datetime import UTC, datetime

import pytest

from app.resilience.backoff import full_jitter, parse_retry_after


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


@pytest.mark.parametrize(("value", "expected"), [(b"3", 3.0), ("0", 0.0), (b" 12 ", 12.0)])
def test_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_retry_after_http_date_is_seconds_from_now():
    now = datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after(b"Wed, 01 Jan 2025 00:00:05 GMT", now) == 5.0
    assert parse_retry_after(b"Tue, 31 Dec 2024 23:59:00 GMT", now) == 0.0


@pytest.mark.parametrize("value", [None, b"", b"soon", b"-1", b"1.5"])
def test_unusable_retry_after_is_none(value):
    assert parse_retry_after(value) is None
