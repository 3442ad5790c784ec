"""Slow and surplus clients, bounded below ASGI (the ``server:`` settings).

uvicorn has a keep-alive timeout but no limit on how long a client may take to
send its header block: a client trickling one header line a second holds its
connection (and a file descriptor) for as long as it likes, and enough of them
exhaust the process. ``ConnectionLimits`` adds that limit and a cap on open
connections; ``app.serving.http_protocol`` lists it among the protocol's mixins.

Settings come from the lifespan state (``app_state["settings"]``), which uvicorn
fills before it accepts the first connection, so the same protocol class serves
under ``gatehouse serve``, plain uvicorn and gunicorn's uvicorn worker alike.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.config.server import ServerSettings
from app.config.settings import Settings
from app.errors import (
    BadRequest,
    GatewayError,
    HeadersTooLarge,
    RequestTimeout,
    TooManyConnections,
    render_problem,
    send_problem,
)
from app.wire import header_value, new_request_id, sane_request_id

log = logging.getLogger("gatehouse")

DEFAULT_LIMITS = ServerSettings()


def server_settings(app_state: dict[str, Any]) -> ServerSettings:
    settings = app_state.get("settings")
    return settings.server if isinstance(settings, Settings) else DEFAULT_LIMITS


async def refuse_connection(scope: Any, receive: Any, send: Any) -> None:  # noqa: ARG001 # the ASGI signature
    """The app a connection over ``server.max_connections`` gets: 503, then the connection is closed."""
    rid = sane_request_id(header_value(scope["headers"], b"x-request-id")).decode()
    error = TooManyConnections("Gatehouse holds as many client connections as it is allowed; retry shortly.")
    await send_problem(send, error, instance=scope["path"], request_id=rid)


class ConnectionLimits(HttpToolsProtocol):
    """Header timeout (408 and close), keep-alive timeout and connection cap for one client connection.

    The header clock starts when the connection is accepted and again at the
    first byte of each later request, and stops at the end of the header block;
    it runs on one timer per connection, re-armed only when it fires early, so a
    request costs a clock read, not a timer. A connection that sent nothing
    when the clock runs out is closed without an answer, like an idle
    keep-alive connection: a 408 there could be read by the client as the
    answer to the request it is about to send.

    The keep-alive clock runs the same way: uvicorn arms a timer after each
    response (``call_later``) and cancels it at the next request's first bytes,
    about 1.8 us a request with uvloop; here the response sets a deadline on
    one timer per connection (uvicorn's ``timeout_keep_alive_task``), new data
    clears it, and a timer that rings early is re-armed for the deadline it finds.
    """

    header_timeout: float
    header_deadline: float | None
    header_timer: asyncio.TimerHandle | None
    in_header_block: bool
    keepalive_deadline: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = server_settings(self.app_state)
        over_limit = len(self.connections) >= limits.max_connections
        super().connection_made(transport)
        self.header_timeout = limits.header_timeout
        self.timeout_keep_alive = limits.keepalive_timeout  # type: ignore[assignment] # uvicorn types it int
        self.in_header_block = False
        self.header_deadline = None
        self.header_timer = None
        if over_limit:
            log.warning("client connection over server.max_connections (%d): 503 and close", limits.max_connections)
            self.app = refuse_connection
        self.start_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        super().connection_lost(exc)
        self.keepalive_deadline = None
        if self.timeout_keep_alive_task is not None:  # uvicorn leaves it armed when the connection failed
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def on_response_complete(self) -> None:
        """uvicorn's, but the keep-alive timeout is a deadline for the connection's one timer."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.keepalive_deadline = None
        self.flow.resume_reading()
        if self.pipeline:  # the next pipelined request starts now
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self.keepalive_deadline = deadline = self.loop.time() + self.timeout_keep_alive
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_at(deadline, self.keepalive_clock_rang)

    def _unset_keepalive_if_required(self) -> None:
        self.keepalive_deadline = None  # an armed timer that rings finds no deadline

    def keepalive_clock_rang(self) -> None:
        self.timeout_keep_alive_task = None
        deadline = self.keepalive_deadline
        if deadline is None:
            return
        if self.loop.time() < deadline:  # a later response moved the deadline
            self.timeout_keep_alive_task = self.loop.call_at(deadline, self.keepalive_clock_rang)
            return
        self.keepalive_deadline = None
        self.timeout_keep_alive_handler()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_header_block = True
        if self.header_deadline is None:  # start_header_clock, inlined: this runs for every request
            self.header_deadline = self.loop.time() + self.header_timeout
        if self.header_timer is None:
            self.header_timer = self.loop.call_at(self.header_deadline, self.header_clock_rang)

    def on_headers_complete(self) -> None:
        self.in_header_block = False
        self.header_deadline = None
        super().on_headers_complete()

    def start_header_clock(self) -> None:
        if self.header_deadline is None:
            self.header_deadline = self.loop.time() + self.header_timeout
        if self.header_timer is None:
            self.header_timer = self.loop.call_at(self.header_deadline, self.header_clock_rang)

    def header_clock_rang(self) -> None:
        self.header_timer = None
        deadline = self.header_deadline
        if deadline is None or self.transport.is_closing():
            return
        if self.loop.time() < deadline:  # the clock was restarted for a later request
            self.header_timer = self.loop.call_at(deadline, self.header_clock_rang)
            return
        self.header_deadline = None
        if not self.in_header_block:
            self.transport.close()
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request is late while the previous answer is still being sent:
            # let that answer finish, read nothing more, and close after it.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.send_header_timeout()

    def send_header_timeout(self) -> None:
        self.transport.write(header_timeout_answer(self.header_timeout, self.client, self.server_state.default_headers))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request httptools cannot parse (malformed, or a head too large): a problem, not uvicorn's plain text."""
        self.transport.write(raw_problem(unparsable_request(msg), new_request_id(), self.server_state.default_headers))
        self.transport.close()


CLOSE = ((b"connection", b"close"),)  # a tuple: each error gets list(CLOSE), which filters may extend


def unparsable_request(reason: str) -> BadRequest:
    """What a client gets for a request the server's parser refused (400); the connection is closed."""
    detail = f"The request could not be read as HTTP/1.1 ({reason.rstrip('.')}); nothing was forwarded."
    return BadRequest(detail, headers=list(CLOSE))


def head_too_large(limit: int) -> HeadersTooLarge:
    """What a client gets for a request line and header block over the server's limit (431), then closed."""
    detail = f"The request line and header block are over {limit} bytes; nothing was forwarded."
    return HeadersTooLarge(detail, headers=list(CLOSE))


def header_timeout_answer(
    header_timeout: float, client: tuple[str, int] | None, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """The 408 problem a client gets when its header block is late (logged here), as bytes to write and close."""
    rid = new_request_id()
    peer = f"{client[0]}:{client[1]}" if client else "?"
    log.info("408: %s sent no complete header block in %gs; closed (request id %s)", peer, header_timeout, rid.decode())
    error = RequestTimeout(f"The request's header block did not arrive within {header_timeout:g} seconds.")
    return raw_problem(error, rid, default_headers)


def raw_problem(error: GatewayError, request_id: bytes, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """``error`` as a whole HTTP/1.1 response, for a connection that has no ASGI request to answer it."""
    status, headers, body = render_problem(error, instance=None, request_id=request_id.decode())
    head = [STATUS_LINE[status]]
    for name, value in [*default_headers, *headers]:
        head += [name, b": ", value, b"\r\n"]
    return b"".join([*head, b"\r\n", body])
