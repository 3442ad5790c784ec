"""The ``server:`` block under hypercorn: header timeout and connection cap, as ``limits`` does for uvicorn.

hypercorn 0.18 has neither. It has one timer per connection, ``keep_alive_timeout``,
running whenever no request is in progress, from the connection's accept to the end
of a header block too: a client trickling header lines was closed after
``keepalive_timeout`` with no answer, whatever ``header_timeout`` said, and any
number of connections were accepted. ``LimitedTCPServer`` (hypercorn's per-connection
server, installed where hypercorn looks it up, by ``app.serving.hypercorn_server``)
adds both with uvicorn's semantics:

- the header clock starts when the connection is accepted and again at the first
  byte of each later request, and stops at the end of the header block; when it
  runs out, a client that has sent part of a request gets 408 problem+json and the
  connection is closed, one that sent nothing is closed without an answer (the
  keep-alive wait between requests is ``keepalive_timeout``, as before); the
  server's shutdown (after ``drain_delay``) stops it too and closes the connection
  without an answer, as uvicorn does;
- a connection over ``max_connections`` has its requests answered 503 problem+json
  with ``Connection: close``, then it is closed. A connection counts until its
  client has gone: hypercorn kept an idle connection's task (and its slot) until
  ``keepalive_timeout`` ran out even after the client had closed it; here the
  keep-alive timer stops when reading ends.

``ProblemH11Protocol`` answers what hypercorn's HTTP/1.1 parser refuses (a malformed
request: 400; a request line and header block over ``h11_max_incomplete_size``:
431) with a problem+json body, as every other refusal is answered; hypercorn sends
an empty body.

The header clock applies to HTTP/1.1; an HTTP/2 connection has no header block of
its own (each stream's headers arrive in one frame, under hypercorn's
``h2_max_header_list_size``), so once it is seen to be HTTP/2 it falls back to
hypercorn's keep-alive timer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import h11
from hypercorn.asyncio.tcp_server import MAX_RECV, TCPServer
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.utils import wrap_app

from app.config.server import ServerSettings
from app.errors import GatewayError, render_problem
from app.serving.limits import head_too_large, header_timeout_answer, refuse_connection, unparsable_request
from app.wire import new_request_id

log = logging.getLogger("gatehouse")


@dataclass(slots=True)
class Connections:
    """The ``server:`` limits of one hypercorn server, and its open client connections (per process)."""

    limits: ServerSettings
    open: int = 0


async def refuse(scope: Any, receive: Any, send: Any) -> None:
    """The app a connection over ``max_connections`` gets: every request (or WebSocket handshake) 503."""
    if scope["type"] == "http":
        await refuse_connection(scope, receive, send)
    elif scope["type"] == "websocket":
        await refuse_connection(scope, receive, _as_websocket_refusal(send))


def _as_websocket_refusal(send: Any) -> Any:
    async def refusal(message: dict[str, Any]) -> None:
        await send({**message, "type": message["type"].replace("http.", "websocket.http.", 1)})

    return refusal


class ProblemH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, answering its parser's refusals with problem+json (see the module docstring)."""

    async def _send_error_response(self, status_code: int) -> None:
        if status_code == 431:
            error: GatewayError = head_too_large(self.config.h11_max_incomplete_size)
        else:
            error = unparsable_request("a malformed request line or header field")
        status, headers, body = render_problem(error, instance=None, request_id=new_request_id().decode())
        response = h11.Response(status_code=status, headers=[*headers, *self.config.response_headers("h11")])
        await self._send_h11_event(response)
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


class LimitedTCPServer(TCPServer):
    """hypercorn's connection server with the header clock and the connection cap (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_clock: asyncio.Task[None] | None = None
        self.between_requests = True  # no request's header block complete since the last response
        self.request_begun = False  # a byte of the next request has arrived

    async def run(self) -> None:
        connections = getattr(self.config, "connections", None)
        if not isinstance(connections, Connections):  # a plain hypercorn Config: hypercorn as it is
            await super().run()
            return
        self.limits = connections.limits
        if connections.open >= self.limits.max_connections:
            log.warning(
                "client connection over server.max_connections (%d): 503 and close", self.limits.max_connections
            )
            self.app = wrap_app(refuse, self.config.wsgi_max_body_size, "asgi")
        connections.open += 1
        try:
            await super().run()
        finally:
            connections.open -= 1
            self.stop_header_clock()

    async def _read_data(self) -> None:
        if not hasattr(self, "limits"):
            await super()._read_data()
            return
        # The header clock, not the keep-alive timer, bounds a new connection's first request.
        await self.idle_task.stop()
        self.start_header_clock()
        # hypercorn 0.18's loop, noting the first byte of each request.
        while not self.reader.at_eof():
            try:
                data = await asyncio.wait_for(self.reader.read(MAX_RECV), self.config.read_timeout)
            except (ConnectionError, OSError, TimeoutError):
                break
            if data and self.between_requests and not self.request_begun and self.speaks_http1:
                self.request_begun = True
                await self.idle_task.stop()  # no longer a keep-alive wait
                self.start_header_clock()
            await self.protocol.handle(RawData(data))
        await self.protocol.handle(Closed())
        # The client is gone: hypercorn 0.18 left the keep-alive timer running, so a client that
        # closed an idle connection held its slot (and the connection's task) until the timer ran out.
        await self.idle_task.stop()
        self.stop_header_clock()

    @property
    def speaks_http1(self) -> bool:
        return isinstance(self.protocol.protocol, H11Protocol)

    def start_header_clock(self) -> None:
        if self.header_clock is None or self.header_clock.done():
            self.header_clock = asyncio.create_task(self.header_clock_rang())

    def stop_header_clock(self) -> None:
        if self.header_clock is not None and self.header_clock is not asyncio.current_task():
            self.header_clock.cancel()
        self.header_clock = None

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated) and hasattr(self, "limits"):
            self.request_begun = False
            self.between_requests = event.idle
            if not event.idle:  # a header block is complete
                self.stop_header_clock()
        await super().protocol_send(event)

    async def header_clock_rang(self) -> None:
        terminated = self.context.terminated
        try:
            # The shutdown (after drain_delay) ends the wait, as it ends hypercorn's keep-alive timer:
            # a client that never sent its header block held the server up until header_timeout.
            async with asyncio.timeout(self.limits.header_timeout):
                await terminated.wait()
        except TimeoutError:
            pass
        if not self.between_requests:
            return
        if terminated.is_set():  # closed without an answer, as uvicorn closes a connection with no request
            await asyncio.shield(self._initiate_server_close())
            return
        if not self.speaks_http1:  # HTTP/2: hypercorn's keep-alive timer
            await self.idle_task.restart(self._task_group, self._idle_timeout)
            return
        if self.request_begun:
            client = self.writer.get_extra_info("peername")
            answer = header_timeout_answer(self.limits.header_timeout, client, self.config.response_headers("h11"))
            async with self.send_lock:
                self.writer.write(answer)
                try:
                    await self.writer.drain()
                except (ConnectionError, RuntimeError):
                    pass
        await asyncio.shield(self._initiate_server_close())
