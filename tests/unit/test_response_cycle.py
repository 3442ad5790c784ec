"""``ResponseCycle`` writes exactly what uvicorn's cycle writes, and fails where it fails.

Each case runs the same ASGI messages through uvicorn's ``RequestResponseCycle``
and Gatehouse's, over a transport that records, and compares the bytes, the
errors and the state left behind.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from app.serving import cycle as cycle_module
from app.serving.cycle import ResponseCycle

pytestmark = pytest.mark.anyio

DEFAULTS = [(b"date", b"Tue, 01 Dec 2026 13:40:00 GMT"), (b"server", b"gatehouse")]


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Flow:
    write_paused = False

    def resume_reading(self) -> None:
        pass


def start(headers: Any, status: int = 200) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def run(
    cls: type[RequestResponseCycle],
    messages: list[dict[str, Any]],
    *,
    method: str = "GET",
    keep_alive: bool = True,
    defaults: list[tuple[bytes, bytes]] = DEFAULTS,
) -> tuple[Any, ...]:
    transport = RecordingTransport()
    responses: list[None] = []
    logger = logging.getLogger("test.cycle")
    scope = {"method": method, "http_version": "1.1", "type": "http"}
    cycle = cls(
        scope,  # type: ignore[arg-type]
        transport,  # type: ignore[arg-type]
        Flow(),  # type: ignore[arg-type]
        logger,
        logger,
        False,
        list(defaults),
        asyncio.Event(),
        False,
        keep_alive,
        lambda: responses.append(None),
    )
    error = None
    for message in messages:
        try:
            await cycle.send(message)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 # compared below
            error = (type(exc), str(exc))
            break
    state = (cycle.response_started, cycle.response_complete, cycle.chunked_encoding, cycle.expected_content_length)
    return b"".join(transport.writes), transport.closed, len(responses), error, state


CL5 = [(b"content-type", b"application/json"), (b"content-length", b"5"), (b"x-request-id", b"abc")]

CASES: dict[str, dict[str, Any]] = {
    "proxied response": {"messages": [start(CL5), body(b"hello")]},
    "body in pieces": {"messages": [start(CL5), body(b"he", True), body(b"llo")]},
    "fields as lists": {"messages": [start([list(f) for f in CL5]), body(b"hello")]},
    "fields as a tuple": {"messages": [start(tuple(CL5)), body(b"hello")]},
    "no fields: chunked": {"messages": [start([]), body(b"abc", True), body(b"")]},
    "no headers key": {"messages": [{"type": "http.response.start", "status": 200}, body(b"x")]},
    "HEAD": {"messages": [start(CL5), body(b"")], "method": "HEAD"},
    "HEAD without length": {"messages": [start([]), body(b"")], "method": "HEAD"},
    "204": {"messages": [start([], 204), body(b"")]},
    "304 with a field": {"messages": [start([(b"etag", b'"x"')], 304), body(b"")]},
    "not keep-alive": {"messages": [start(CL5), body(b"hello")], "keep_alive": False},
    "upper-case name": {"messages": [start([(b"Content-Length", b"2"), (b"X-A", b"b")]), body(b"ok")]},
    "connection close": {"messages": [start([(b"connection", b"close"), *CL5]), body(b"hello")]},
    "connection keep-alive": {"messages": [start([(b"connection", b"keep-alive"), *CL5]), body(b"hello")]},
    "transfer-encoding": {"messages": [start([(b"transfer-encoding", b"chunked")]), body(b"ab", True), body(b"")]},
    "two lengths": {"messages": [start([(b"content-length", b"2"), (b"content-length", b"9")]), body(b"ok")]},
    "tab and obs-text": {"messages": [start([(b"x-a", b"a\tb\x80\xff"), (b"content-length", b"0")]), body(b"")]},
    "value with LF": {"messages": [start([(b"x-a", b"a\nb")]), body(b"")]},
    "value with CR": {"messages": [start([(b"x-a", b"a\rInjected: 1")]), body(b"")]},
    "value with NUL": {"messages": [start([(b"x-a", b"a\x00")]), body(b"")]},
    "name with space": {"messages": [start([(b"x a", b"b")]), body(b"")]},
    "name with colon": {"messages": [start([(b"x:a", b"b")]), body(b"")]},
    "empty name": {"messages": [start([(b"", b"b"), (b"content-length", b"0")]), body(b"")]},
    "str value": {"messages": [start([(b"x-a", "b")]), body(b"")]},
    "bad length": {"messages": [start([(b"content-length", b"abc")]), body(b"")]},
    "field of three": {"messages": [start([(b"x-a", b"b", b"c")]), body(b"")]},
    "fields of two lengths": {"messages": [start([(b"x-a", b"b"), (b"x-c", b"d", b"e")]), body(b"")]},
    "unknown status": {"messages": [start([], 999), body(b"")]},
    "body too long": {"messages": [start(CL5), body(b"hello!")]},
    "body too short": {"messages": [start(CL5), body(b"hell")]},
    "body before start": {"messages": [body(b"x")]},
    "message after the end": {"messages": [start(CL5), body(b"hello"), body(b"")]},
    "trailers message": {"messages": [start(CL5), {"type": "http.response.trailers", "headers": []}]},
    "defaults with a length": {"messages": [start([]), body(b"ok")], "defaults": [(b"content-length", b"2")]},
    "upper-case default": {"messages": [start(CL5), body(b"hello")], "defaults": [(b"Server", b"x")]},
    "no defaults": {"messages": [start(CL5), body(b"hello")], "defaults": []},
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_same_bytes_errors_and_state_as_uvicorn(case):
    options = CASES[case]
    assert await run(ResponseCycle, **options) == await run(RequestResponseCycle, **options)


async def test_the_common_head_takes_the_fast_path(monkeypatch):
    called: list[object] = []

    async def uvicorns_send(_self: object, message: object) -> None:
        called.append(message)

    monkeypatch.setattr(RequestResponseCycle, "send", uvicorns_send)
    written, _, responses, error, _ = await run(ResponseCycle, [start(CL5), body(b"hello")])
    assert called == [] and error is None and responses == 1
    assert written == (
        b"HTTP/1.1 200 OK\r\ndate: Tue, 01 Dec 2026 13:40:00 GMT\r\nserver: gatehouse\r\n"
        b"content-type: application/json\r\ncontent-length: 5\r\nx-request-id: abc\r\n\r\nhello"
    )


def test_on_headers_complete_is_still_uvicorns_apart_from_the_cycle_class():
    """``OwnCycle`` copies uvicorn's method: a uvicorn that changes it must be looked at again."""
    theirs = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    for line in (
        "parsed_url = httptools.parse_url(self.url)",
        "self.cycle = RequestResponseCycle(",
        'keep_alive=http_version != "1.0" and self.parser.should_keep_alive(),',
        "self._start_asgi_task(self.cycle, app)",
        "self.pipeline.appendleft((self.cycle, app))",
    ):
        assert line in theirs
    parameters = list(inspect.signature(RequestResponseCycle.__init__).parameters)
    assert parameters == [
        "self",
        "scope",
        "transport",
        "flow",
        "logger",
        "access_logger",
        "access_log",
        "default_headers",
        "message_event",
        "expect_100_continue",
        "keep_alive",
        "on_response",
    ]
    assert "on_headers_complete" in vars(cycle_module.OwnCycle)


def test_the_byte_tables_refuse_exactly_what_uvicorns_patterns_refuse():
    for byte in range(256):
        one = bytes([byte])
        assert (cycle_module._VALUE_BYTES[byte] == 0) == bool(HEADER_VALUE_RE.search(one)), byte
        refused_name = bool(HEADER_RE.search(one)) or one.isupper()
        assert (cycle_module._NAME_BYTES[byte] == 0) == refused_name, byte
