from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from app.wire import header_value, header_values, parse_retry_after, sane_request_id

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("value", "expected"), [(b"3", 3.0), ("0", 0.0), (b" 12 ", 12.0), ("120", 120.0)])
def test_retry_after_delay_seconds(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("120", 120.0), (" 7 ", 7.0), ("99999", 3600.0)])
def test_retry_after_seconds_are_clamped_to_the_cap(value, expected):
    assert parse_retry_after(value, now=NOW, cap=3600) == expected


def test_retry_after_http_date_is_seconds_from_now_never_negative():
    when = datetime.fromtimestamp(NOW + 90, UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), now=NOW) == pytest.approx(90)
    assert parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 0.0
    far = datetime.fromtimestamp(NOW + 10 * 86400, UTC)
    assert parse_retry_after(format_datetime(far, usegmt=True), now=NOW, cap=600) == 600


def test_retry_after_http_date_defaults_to_the_current_time():
    soon = datetime.fromtimestamp(datetime.now(UTC).timestamp() + 60, UTC)
    assert 55 <= parse_retry_after(format_datetime(soon, usegmt=True)) <= 61


@pytest.mark.parametrize("value", [None, "", b"", "soon", "-5", "1.5", b"1.5", "Wed, 99 Foo 2015", "\u0663"])
def test_unusable_retry_after_is_none(value):
    assert parse_retry_after(value, now=NOW, cap=3600) is None


def test_header_lookup_is_case_insensitive_and_keeps_repeats_in_order():
    headers = [(b"Set-Cookie", b"a=1"), (b"x-other", b"y"), (b"set-cookie", b"b=2")]
    assert header_value(headers, b"set-cookie") == b"a=1"
    assert header_values(headers, b"set-cookie") == [b"a=1", b"b=2"]
    assert header_value(headers, b"missing") is None
    assert header_values(headers, b"missing") == []


def test_sane_request_id_is_kept_and_insane_one_replaced():
    assert sane_request_id(b"abc-123") == b"abc-123"
    fresh = sane_request_id(b"bad id\r\n")
    assert fresh != b"bad id\r\n" and len(fresh) == 32
    assert sane_request_id(None) != sane_request_id(None)


@pytest.mark.parametrize("value", [b"abc\n", b"abc\r\n", b"\nabc", b"a" * 129])
def test_a_request_id_with_a_line_end_or_too_long_is_replaced(value):
    # ``$`` also matches before a final newline: "abc\n" passed, and the access log writes a sane id
    # between quotes without escaping it, so it split the JSON line in two.
    fresh = sane_request_id(value)
    assert fresh != value and len(fresh) == 32


def test_new_request_ids_are_32_hex_characters_a_fixed_prefix_and_a_counter():
    from app.wire import new_request_id, sane_request_id

    first, second = new_request_id(), new_request_id()
    assert len(first) == len(second) == 32 and first[:16] == second[:16]
    assert int(second[16:], 16) == int(first[16:], 16) + 1
    assert all(c in b"0123456789abcdef" for c in first) and sane_request_id(first) is first
