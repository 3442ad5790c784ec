"""``AccessLog``'s lines: valid JSON with the same fields for any input, and no secret in them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from app.observability.access import AccessLog
from app.observability.lines import LineBuffer
from app.observability.logging import REDACTED
from app.wire import sane_request_id

FIELDS = [
    "timestamp",
    "request_id",
    "trace_id",
    "route",
    "method",
    "path",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "upstream",
    "upstream_ms",
    "client",
]


def one_line(fmt: str = "json", query_params: tuple[str, ...] = ("token",), **overrides: Any) -> str:
    written: list[bytes] = []
    log = AccessLog(fmt, query_params, LineBuffer(written.append))  # no event loop: written at once
    fields: dict[str, Any] = {
        "request_id": b"0f8e5c1a2b3c4d5e",
        "trace_id": None,
        "route": "api",
        "method": "GET",
        "path": "/api/x",
        "query": b"",
        "status": 200,
        "bytes_in": 0,
        "bytes_out": 96,
        "duration_ns": 12_345_600,
        "upstream": "http://127.0.0.1:9000",
        "upstream_ns": 10_100_000,
        "client": "127.0.0.1:40000",
    }
    log.emit(**(fields | overrides))
    (line,) = b"".join(written).decode().removesuffix("\n").split("\n")  # not splitlines(): U+2028 is no line end
    return line


def test_a_line_holds_every_field_in_order_with_its_value():
    line = orjson.loads(one_line(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", bytes_in=7, status=502))
    assert list(line) == FIELDS
    assert line | {"timestamp": None} == {
        "timestamp": None,
        "request_id": "0f8e5c1a2b3c4d5e",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "route": "api",
        "method": "GET",
        "path": "/api/x",
        "status": 502,
        "bytes_in": 7,
        "bytes_out": 96,
        "duration_ms": 12.346,
        "upstream": "http://127.0.0.1:9000",
        "upstream_ms": 10.1,
        "client": "127.0.0.1:40000",
    }


def test_missing_values_are_null_and_a_websocket_line_has_its_close_code():
    line = orjson.loads(one_line(upstream=None, upstream_ns=None, status=101, close_code=1000))
    assert list(line) == [*FIELDS, "close_code"]
    assert (line["upstream"], line["upstream_ms"], line["close_code"]) == (None, None, 1000)


@pytest.mark.parametrize(
    ("nanoseconds", "shown"),
    [(0, 0.0), (499, 0.0), (500, 0.001), (999_999, 1.0), (1_000_000_000, 1000.0), (3_723_500_250_000, 3_723_500.25)],
)
def test_durations_are_milliseconds_rounded_to_the_microsecond(nanoseconds, shown):
    line = orjson.loads(one_line(duration_ns=nanoseconds, upstream_ns=nanoseconds))
    assert line["duration_ms"] == shown and line["upstream_ms"] == shown


@pytest.mark.parametrize("count", [0, 999, 1000, 1024, 10**12])
def test_counts_and_statuses_are_written_whole_whatever_their_size(count):
    line = orjson.loads(one_line(bytes_in=count, bytes_out=count + 1, status=599))
    assert (line["bytes_in"], line["bytes_out"], line["status"]) == (count, count + 1, 599)


def test_the_timestamp_is_utc_to_the_millisecond_and_now():
    before = datetime.now(UTC)
    stamp = orjson.loads(one_line())["timestamp"]
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", stamp), stamp
    assert before - timedelta(milliseconds=1) <= datetime.fromisoformat(stamp) <= after


@pytest.mark.parametrize(
    "path",
    [
        "/api/authorization",  # a credential header's name, then the JSON's own '",'
        '/api/"quoted"\\back',
        "/api/tab\there/nl\nx",
        "/api/ünïcödé/\u2028/\x00",
        "/api/cookie",
    ],
)
def test_any_path_leaves_the_line_valid_json_with_the_path_as_it_was(path):
    line = orjson.loads(one_line(path=path))
    assert list(line) == FIELDS
    assert line["path"] == path and line["status"] == 200


@pytest.mark.parametrize(
    ("path", "query", "secret"),
    [
        ("/api/x", b"token=s3cr3t&page=2", "s3cr3t"),
        ("/api/Bearer abcdef123", b"", "abcdef123"),
        ("/api/eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", b"", "eyJhbGciOi"),
        ("/api/x", b"jwt=eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", "eyJzdWIiOi"),
        ("/api/x-api-key=k3y-value", b"", "k3y-value"),
        ("/api/x", b"Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_credentials_in_the_path_or_query_are_masked(path, query, secret, fmt):
    line = one_line(fmt, path=path, query=query)
    assert secret not in line and REDACTED in line
    if fmt == "json":
        assert list(orjson.loads(line)) == FIELDS


def lines_of(written: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in b"".join(written).decode().removesuffix("\n").split("\n")]


def emit_path(log: AccessLog, path: str) -> None:
    log.emit(b"0f8e5c1a2b3c4d5e", None, "api", "GET", path, b"", 200, 0, 96, 10_000_000, None, None, "127.0.0.1:1")


@pytest.mark.parametrize("path", ["/api/x", "/api/eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", '/api/"quoted"\n'])
def test_a_path_seen_before_is_shown_as_the_first_time(path):
    written: list[bytes] = []
    log = AccessLog("json", (), LineBuffer(written.append))
    for _ in range(3):
        emit_path(log, path)
    first, *again = lines_of(written)
    assert again == [first | {"timestamp": line["timestamp"]} for line in again]
    if "eyJ" in path:
        assert "eyJhbGciOi" not in first["path"] and REDACTED in first["path"]
    else:
        assert first["path"] == path


def test_the_paths_kept_are_bounded_in_number_and_length(monkeypatch):
    monkeypatch.setattr("app.observability.access.MAX_KEPT_PATHS", 8)
    written: list[bytes] = []
    log = AccessLog("json", (), LineBuffer(written.append))
    paths = [f"/api/{i}" for i in range(20)] + ["/" + "x" * 300]
    for path in paths:
        emit_path(log, path)
    assert [line["path"] for line in lines_of(written)] == paths
    assert 0 < len(log._paths) <= 8 and "/" + "x" * 300 not in log._paths


def test_a_client_request_id_with_a_line_end_cannot_split_the_line():
    line = one_line(request_id=sane_request_id(b"abc\n"))
    assert orjson.loads(line)["request_id"] != "abc\n"


def test_a_credential_shaped_request_id_is_masked():
    line = one_line(request_id=b"eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl")
    assert "eyJhbGciOi" not in line and orjson.loads(line)["request_id"] == REDACTED


def test_an_unusual_method_or_client_is_still_valid_json():
    line = orjson.loads(one_line(method='GE"T', client='203.0.113.9"x'))
    assert (line["method"], line["client"]) == ('GE"T', '203.0.113.9"x')


def test_text_format_is_one_readable_line():
    line = one_line("text", query=b"token=s3cr3t&page=2", close_code=1001)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d 127\.0\.0\.1:40000 GET /api/x\?token=\[REDACTED\]&page=2 200 96B 12\.3ms"
        r" \[api\] -> http://127\.0\.0\.1:9000 10\.1ms 0f8e5c1a2b3c4d5e close=1001",
        line,
    ), line


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/api/x\r\n12:00:00 203.0.113.9:1 GET /admin 200", "/api/x\\r\\n12:00:00 203.0.113.9:1 GET /admin 200"),
        ("/api/\t\x1b[2K\x00\x7f", "/api/\\t\\x1b[2K\\x00\\x7f"),
        ("/api/\x85\u2028\u2029", "/api/\\x85\\u2028\\u2029"),  # line ends to str.splitlines() and some viewers
        ("/api/a\\nb", "/api/a\\\\nb"),  # a literal backslash: doubled, so an escape is never ambiguous
        ("/api/ünïcödé", "/api/ünïcödé"),
    ],
)
def test_text_format_escapes_control_characters_so_a_client_cannot_forge_a_line(path, shown):
    line = one_line("text", path=path, request_id=b"a\x1bb")
    assert f" GET {shown} 200 " in line and line.endswith(" a\\x1bb") and line.isprintable()
