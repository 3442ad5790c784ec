"""The test upstream: a plain ASGI app that shows what the gateway sent it.

Plain ASGI rather than a framework so that nothing between the socket and the
test is rewritten: the echo reports the raw path, the raw query and the headers
in wire order, and every response's headers are exactly those listed here (plus
the server's own ``date`` and ``server``). It runs under uvicorn and hypercorn.

``make_upstream()`` returns the app and its ``UpstreamStats``, which counts
requests per path and records how each long-lived response ended, so a test
can prove that the gateway closed an upstream stream when its client went away.

Endpoints (query parameters in brackets):

- ``/echo`` and ``/echo/<anything>``, any method: JSON with method, path,
  raw_path, query_string, http_version, headers (``[name, value]`` pairs in
  order), body_length, body_sha256.
- ``/stream`` [chunks=3, delay=0.1]: chunked text, ``chunk <i>\\n``, sleeping
  ``delay`` before every chunk but the first.
- ``/sse`` [events=3, delay=0.1]: ``text/event-stream``, one event per write.
- ``/gzip``: ``GZIP_BODY`` with ``Content-Encoding: gzip`` and Content-Length.
- ``/cookies``: the two ``SET_COOKIES`` as two ``Set-Cookie`` fields.
- ``/redirect`` [to, status=302]: ``Location: <to>`` as given; without ``to``,
  an absolute ``Location`` on this upstream's own origin (``<origin>/echo``).
- ``/status/<code>`` [retry_after]: that status (200-599) with a small JSON body
  (and a ``Retry-After`` field if asked).
- ``/flaky`` [key, failures=1, status=503, retry_after]: the first ``failures``
  requests for ``key`` get ``status``, later ones 200 with ``{"attempt": n}``.
- ``/health``: ``stats.health`` (200 unless a test changes it), for health checks.
- ``/sleep`` [seconds=1]: sleeps, then 200 (gives up if the client leaves).
- ``/large`` [bytes=1048576]: ``large_body(bytes)`` in ``LARGE_CHUNK`` writes.
- ``/upload``: reads the request body as it streams in; JSON with length,
  sha256 and the number of body messages.
- ``/headers``: its own ``date`` (``UPSTREAM_DATE``) and ``server``
  (``UPSTREAM_SERVER``) fields, which the gateway must replace. The server adds
  its own as well (uvicorn before the app's, hypercorn after), so the upstream's
  response carries two of each.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

import anyio

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

GZIP_PLAIN = b"Gatehouse passes compressed bodies through untouched.\n" * 20
GZIP_BODY = gzip.compress(GZIP_PLAIN, compresslevel=9, mtime=0)
SET_COOKIES = (b"session=abc123; Path=/; HttpOnly", b"theme=dark; Path=/; Max-Age=3600")
UPSTREAM_DATE = b"Sat, 01 Jan 2000 00:00:00 GMT"
UPSTREAM_SERVER = b"gatehouse-test-upstream"
LARGE_CHUNK = 64 * 1024
_PATTERN = bytes(range(256)) * (LARGE_CHUNK // 256 + 1)

StreamState = Literal["open", "finished", "disconnected", "cancelled"]


def large_body(size: int) -> bytes:
    """The exact body ``/large?bytes=size`` sends: each chunk shifted by one, so order matters."""
    return b"".join(_large_chunks(size))


def _large_chunks(size: int) -> Iterator[bytes]:
    for index in range(math.ceil(size / LARGE_CHUNK)):
        length = min(LARGE_CHUNK, size - index * LARGE_CHUNK)
        offset = index % 256
        yield _PATTERN[offset : offset + length]


@dataclass
class StreamRecord:
    """One long-lived response (/stream, /sse, /large, /sleep) and how it ended.

    ``cancelled`` means the server cancelled it (forced shutdown) or it failed.
    """

    path: str
    state: StreamState = "open"
    chunks_sent: int = 0
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() after each body write


@dataclass
class UpstreamStats:
    requests: Counter[str] = field(default_factory=Counter)  # by decoded path
    streams: list[StreamRecord] = field(default_factory=list)
    flaky: Counter[str] = field(default_factory=Counter)  # /flaky requests by key
    health: int = 200  # what /health answers

    @property
    def open_streams(self) -> int:
        return sum(record.state == "open" for record in self.streams)

    def streams_for(self, path: str) -> list[StreamRecord]:
        return [record for record in self.streams if record.path == path]

    async def wait_for(self, predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """Poll ``predicate`` until it holds; ``TimeoutError`` after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            while not predicate():
                await anyio.sleep(0.005)


def make_upstream() -> tuple[Callable[[Scope, Receive, Send], Awaitable[None]], UpstreamStats]:
    stats = UpstreamStats()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"the test upstream speaks HTTP only, not {scope['type']}")
        path: str = scope["path"]
        stats.requests[path] += 1
        try:
            query = _Query(scope["query_string"])
            if path.startswith("/status/"):
                await _status(send, path.removeprefix("/status/"), query.get("retry_after"))
                return
            handler = _echo if path.startswith("/echo/") else _ROUTES.get(path)
            if handler is None:
                await _json(send, {"detail": f"no test endpoint {path}"}, status=404)
                return
            await handler(scope, receive, send, query, stats)
        except _BadQuery as exc:
            await _json(send, {"detail": str(exc)}, status=400)

    return app, stats


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _BadQuery(ValueError):
    pass


class _Query:
    def __init__(self, raw: bytes) -> None:
        self._values = parse_qs(raw.decode("latin-1"), keep_blank_values=True)

    def get(self, name: str) -> str | None:
        values = self._values.get(name)
        return values[0] if values else None

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        raw = self.get(name)
        try:
            value = default if raw is None else float(raw)
        except ValueError:
            raise _BadQuery(f"{name} must be a number") from None
        if not low <= value <= high:
            raise _BadQuery(f"{name} must be between {low} and {high}")
        return value


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _json(send: Send, payload: Any, *, status: int = 200, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    fields = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await _start(send, status, fields)
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _echo(scope: Scope, receive: Receive, send: Send, _query: _Query, _stats: UpstreamStats) -> None:
    digest = hashlib.sha256()
    length = 0
    async for chunk in _read_body(receive):
        digest.update(chunk)
        length += len(chunk)
    raw_path = scope.get("raw_path") or scope["path"].encode()
    payload = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": raw_path.decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]],
        "body_length": length,
        "body_sha256": digest.hexdigest(),
    }
    await _json(send, payload)


async def _upload(_scope: Scope, receive: Receive, send: Send, _query: _Query, _stats: UpstreamStats) -> None:
    digest = hashlib.sha256()
    length = messages = 0
    async for chunk in _read_body(receive):
        digest.update(chunk)
        length += len(chunk)
        messages += 1
    await _json(send, {"length": length, "sha256": digest.hexdigest(), "messages": messages})


async def _status(send: Send, code: str, retry_after: str | None = None) -> None:
    if not code.isdigit() or not 200 <= int(code) <= 599:
        raise _BadQuery("status must be 200-599")
    status = int(code)
    if status in (204, 304):
        await _start(send, status, [])
        await send({"type": "http.response.body", "body": b""})
        return
    extra = [(b"retry-after", retry_after.encode())] if retry_after is not None else []
    await _json(send, {"status": status}, status=status, headers=extra)


async def _flaky(scope: Scope, receive: Receive, send: Send, query: _Query, stats: UpstreamStats) -> None:
    async for _ in _read_body(receive):
        pass
    key = query.get("key") or ""
    failures = int(query.number("failures", 1, low=0, high=1000))
    stats.flaky[key] += 1
    attempt = stats.flaky[key]
    if attempt <= failures:
        await _status(send, query.get("status") or "503", query.get("retry_after"))
        return
    await _json(send, {"attempt": attempt, "method": scope["method"]})


async def _health(_scope: Scope, _receive: Receive, send: Send, _query: _Query, stats: UpstreamStats) -> None:
    await _json(send, {"health": stats.health}, status=stats.health)


async def _gzip(_scope: Scope, _receive: Receive, send: Send, _query: _Query, _stats: UpstreamStats) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-encoding", b"gzip"),
        (b"content-length", str(len(GZIP_BODY)).encode()),
    ]
    await _start(send, 200, headers)
    await send({"type": "http.response.body", "body": GZIP_BODY})


async def _cookies(_scope: Scope, _receive: Receive, send: Send, _query: _Query, _stats: UpstreamStats) -> None:
    headers = [(b"set-cookie", cookie) for cookie in SET_COOKIES]
    await _start(send, 200, [*headers, (b"content-length", b"2")])
    await send({"type": "http.response.body", "body": b"ok"})


async def _redirect(scope: Scope, _receive: Receive, send: Send, query: _Query, _stats: UpstreamStats) -> None:
    status = int(query.number("status", 302, low=300, high=399))
    location = query.get("to")
    if location is None:
        host, port = scope["server"]
        location = f"{scope['scheme']}://{host}:{port}/echo"
    await _start(send, status, [(b"location", location.encode("latin-1")), (b"content-length", b"0")])
    await send({"type": "http.response.body", "body": b""})


async def _headers(_scope: Scope, _receive: Receive, send: Send, _query: _Query, _stats: UpstreamStats) -> None:
    headers = [(b"date", UPSTREAM_DATE), (b"server", UPSTREAM_SERVER), (b"content-length", b"2")]
    await _start(send, 200, headers)
    await send({"type": "http.response.body", "body": b"ok"})


async def _stream(scope: Scope, receive: Receive, send: Send, query: _Query, stats: UpstreamStats) -> None:
    chunks = int(query.number("chunks", 3, low=0, high=100_000))
    delay = query.number("delay", 0.1, low=0, high=60)
    async with _tracked(scope, receive, stats) as record:
        await _start(send, 200, [(b"content-type", b"text/plain")])
        for i in range(chunks):
            if i:
                await anyio.sleep(delay)
            await _write(send, record, f"chunk {i}\n".encode())
        await send({"type": "http.response.body", "body": b""})


async def _sse(scope: Scope, receive: Receive, send: Send, query: _Query, stats: UpstreamStats) -> None:
    events = int(query.number("events", 3, low=0, high=100_000))
    delay = query.number("delay", 0.1, low=0, high=60)
    async with _tracked(scope, receive, stats) as record:
        await _start(send, 200, [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")])
        for i in range(events):
            if i:
                await anyio.sleep(delay)
            await _write(send, record, f"id: {i}\nevent: tick\ndata: event {i}\n\n".encode())
        await send({"type": "http.response.body", "body": b""})


async def _large(scope: Scope, receive: Receive, send: Send, query: _Query, stats: UpstreamStats) -> None:
    size = int(query.number("bytes", 1024 * 1024, low=0, high=2**34))
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]
    async with _tracked(scope, receive, stats) as record:
        await _start(send, 200, headers)
        for chunk in _large_chunks(size):
            await _write(send, record, chunk)
        await send({"type": "http.response.body", "body": b""})


async def _sleep(scope: Scope, receive: Receive, send: Send, query: _Query, stats: UpstreamStats) -> None:
    seconds = query.number("seconds", 1, low=0, high=60)
    async with _tracked(scope, receive, stats):
        await anyio.sleep(seconds)
        await _json(send, {"slept": seconds})


async def _write(send: Send, record: StreamRecord, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})
    record.chunks_sent += 1
    record.sent_at.append(time.monotonic())


@contextlib.asynccontextmanager
async def _tracked(scope: Scope, receive: Receive, stats: UpstreamStats) -> AsyncIterator[StreamRecord]:
    """Run the block as a long-lived response: record it, and cancel it if the client leaves.

    Servers drop writes after a disconnect without telling the app, so a
    watcher waits for ``http.disconnect`` and cancels the block.
    """
    record = StreamRecord(scope["path"])
    stats.streams.append(record)

    async def cancel_on_disconnect(block: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # request body, unused
        if record.state == "open":
            record.state = "disconnected"
        block.cancel()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_on_disconnect, tg.cancel_scope)
            yield record
            # Set before the watcher can run: after the last write, servers
            # answer receive() with http.disconnect.
            if record.state == "open":
                record.state = "finished"
            tg.cancel_scope.cancel()
    except BaseException:
        if record.state == "open":
            record.state = "cancelled"
        raise


_ROUTES: dict[str, Callable[[Scope, Receive, Send, _Query, UpstreamStats], Awaitable[None]]] = {
    "/echo": _echo,
    "/upload": _upload,
    "/gzip": _gzip,
    "/cookies": _cookies,
    "/redirect": _redirect,
    "/headers": _headers,
    "/stream": _stream,
    "/sse": _sse,
    "/large": _large,
    "/sleep": _sleep,
    "/flaky": _flaky,
    "/health": _health,
}
