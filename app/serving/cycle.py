"""The request-response cycle Gatehouse serves HTTP/1.1 with: uvicorn's, with a cheaper response head.

uvicorn's ``RequestResponseCycle.send`` checks a response head one field at a
time: two regex searches per field (name, value), a ``lower()`` and three name
comparisons, then the head is joined piece by piece. For a small proxied
response (about ten fields) that was about 2.3% of the request's instructions.
``ResponseCycle.send`` checks the same characters in two passes over all the
names and all the values joined (the patterns match single characters, so
joining changes no answer; each pass is a ``bytes.translate`` through a table
made from uvicorn's pattern, several times cheaper than the regex), renders uvicorn's default fields (Date, Server)
once per second instead of per response, and joins the head in C.

Only the common head takes that path: lower-case, valid names and values, no
``Transfer-Encoding`` or ``Connection`` field, uvicorn's own access log off.
Anything else (an upper-case name, an invalid character, a field uvicorn must
interpret) goes to uvicorn's ``send`` as it is, which writes the same bytes or
raises the same error. Bodies are written as uvicorn writes them.

uvicorn has no hook for its cycle class: ``OwnCycle.on_headers_complete`` is
uvicorn's, building a ``ResponseCycle`` (with the same arguments) instead.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)


def _byte_map(refused: re.Pattern[bytes]) -> bytes:
    """A ``bytes.translate`` table: 0 for each byte ``refused`` matches alone, 1 for any other."""
    return bytes(0 if refused.fullmatch(bytes([byte])) else 1 for byte in range(256))


# The checks as tables, made from uvicorn's own patterns: ``b"\0" in data.translate(table)`` says whether
# ``data`` holds a refused byte in 0.15 us for a small head's names or values, where the regex searches
# (a character class tested byte by byte) took 0.25 and 0.7 us.
_VALUE_BYTES = _byte_map(HEADER_VALUE_RE)
# Names: uvicorn's HEADER_RE plus upper-case letters (a name uvicorn would lower-case itself), so one
# check says whether the names can be written as they are.
_NAME_BYTES = _byte_map(re.compile(HEADER_RE.pattern[:-1] + b"A-Z]"))
# Fields uvicorn interprets beyond Content-Length; a head with one goes its way.
_INTERPRETED = frozenset({b"transfer-encoding", b"connection"})
_NO_BODY_STATUS = (204, 304)


class _RenderedDefaults:
    """uvicorn's default fields (``server_state.default_headers``, a new list each second) as head bytes."""

    __slots__ = ("source", "rendered")

    def __init__(self) -> None:
        self.source: list[tuple[bytes, bytes]] | None = None
        self.rendered: bytes | None = None

    def of(self, defaults: list[tuple[bytes, bytes]]) -> bytes | None:
        """The fields as ``name: value\\r\\n`` lines, or None if they need uvicorn's own handling."""
        if defaults is not self.source:
            self.rendered = _render(defaults)
            self.source = defaults
        return self.rendered


def _render(fields: list[tuple[bytes, bytes]]) -> bytes | None:
    try:
        names, values = zip(*fields, strict=True) if fields else ((), ())
    except ValueError:
        return None
    if (
        b"\0" in b"".join(names).translate(_NAME_BYTES)
        or b"\0" in b"".join(values).translate(_VALUE_BYTES)
        or not _INTERPRETED.isdisjoint(names)
        or b"content-length" in names
    ):
        return None
    return b"".join([name + b": " + value + b"\r\n" for name, value in zip(names, values, strict=True)])


_DEFAULTS = _RenderedDefaults()


class ResponseCycle(RequestResponseCycle):
    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if not self._send_head(message):
                await super().send(message)
            return
        if self.response_complete or message["type"] != "http.response.body" or self.chunked_encoding:
            await super().send(message)  # uvicorn's errors, and its chunked framing
            return
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
        else:
            num_bytes = len(body)
            if num_bytes > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= num_bytes
            self.transport.write(body)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _send_head(self, message: Any) -> bool:
        """Write the head if it is the common kind (see the module's docstring); False: uvicorn's ``send`` must."""
        if message["type"] != "http.response.start" or self.access_log:
            return False
        defaults = _DEFAULTS.of(self.default_headers)
        headers = message.get("headers", ())
        if defaults is None or (type(headers) is not list and type(headers) is not tuple):
            return False  # an iterable other than these would be used up by the checks
        try:
            names, values = zip(*headers, strict=True) if headers else ((), ())  # raises unless all are pairs
            if (
                b"\0" in b"".join(names).translate(_NAME_BYTES)
                or b"\0" in b"".join(values).translate(_VALUE_BYTES)
                or not _INTERPRETED.isdisjoint(names)
            ):
                return False
            length = int(values[names.index(b"content-length")].decode()) if b"content-length" in names else None
            status = message["status"]
            content = [STATUS_LINE[status], defaults]
        except (ValueError, TypeError, KeyError):  # not pairs, not bytes, no such status: uvicorn raises its error
            return False
        if names:
            content.append(b"\r\n".join(map(b": ".join, headers)))
            content.append(b"\r\n")
        if length is not None:
            self.expected_content_length = length
            self.chunked_encoding = False
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status not in _NO_BODY_STATUS:
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.response_started = True
        self.waiting_for_100_continue = False
        self.transport.write(b"".join(content))
        return True


class OwnCycle(HttpToolsProtocol):
    """Serves each request with a ``ResponseCycle``: uvicorn's ``on_headers_complete``, that class apart."""

    def on_headers_complete(self) -> None:
        http_version = self.parser.get_http_version()
        method = self.parser.get_method()
        self.scope["method"] = method.decode("ascii")
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        self.scope["path"] = self.root_path + path
        self.scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        self.scope["query_string"] = parsed_url.query or b""
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        else:
            app = self.app
        existing_cycle = self.cycle
        self.cycle = ResponseCycle(
            self.scope,
            self.transport,
            self.flow,
            self.logger,
            self.access_logger,
            self.access_log,
            self.server_state.default_headers,
            asyncio.Event(),
            self.expect_100_continue,
            http_version != "1.0" and self.parser.should_keep_alive(),
            self.on_response_complete,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(self.cycle, app)
        else:  # a pipelined request waits for the answer before it
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))
