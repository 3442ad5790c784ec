"""The WebSocket protocol class Gatehouse serves with under uvicorn (its ``ws`` option).

uvicorn's websockets-based protocol, changed in two places:

- shutdown: uvicorn closes every open WebSocket with 1012 the moment shutdown
  begins. Gatehouse's relay closes its sockets itself, with 1001, once
  ``shutdown_grace`` has passed (``app.assembly.websocket``), so an accepted
  socket whose relay is still running is left to it; uvicorn still waits for it
  and cancels it after the grace, as it does any request.
- after a refusal sent with ``websocket.http.response`` the handshake counts as
  complete, so uvicorn does not log "returned without completing handshake";
- a malformed handshake (no ``Sec-WebSocket-Key``, a bad version, ...) is refused
  with 400 and a problem+json body, like every other refusal, and logged;
- the app may lower the frame parser's message limit (``gatehouse.websocket.max_message_bytes``),
  so a frame over a route's ``max_message_bytes`` is refused (1009) before it is buffered;
- pings and pongs are relayed through the ``gatehouse.websocket.ping``
  extension (``app.proxy.websocket``): once the app has taken it, a client's
  ping is not answered here but passed to the app, as are its pongs (except
  those answering uvicorn's own keepalive pings), and the app sends ping and
  pong frames. Like a message, a control frame passed on pauses reading until
  the app has read it, and at most ``MAX_QUEUED_CONTROL`` wait: the rest of a
  flood read at once is dropped (unanswered). An app that does not take the
  extension gets the usual behaviour: pings answered here, nothing passed on.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from app.errors import BadRequest, render_problem
from app.outbound.websocket import withhold_pongs
from app.proxy.websocket import LIMIT_EXTENSION, PING_EXTENSION, PONG_EVENT, RELAY_CONTROL
from app.serving.tls import tls_extension

log = logging.getLogger("gatehouse.proxy")

MAX_QUEUED_CONTROL = 16


class WebSocketClientCertificateMixin(WebSocketsSansIOProtocol):
    """The TLS client certificate's subject in each WebSocket handshake's scope (``tls_protocol`` does it for
    requests), so ``auth: mtls`` covers WebSockets too."""

    _tls_extension: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        self._tls_extension = tls_extension(ssl_object) if ssl_object is not None else None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)  # builds the scope and schedules the app, which has not run yet
        if self._tls_extension is not None:
            extensions = self.scope.get("extensions") or {}
            self.scope["extensions"] = {**extensions, "tls": self._tls_extension}  # type: ignore[dict-item]


class GatehouseWebSocketProtocol(WebSocketClientCertificateMixin, WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relays_control = False  # the app took the ping extension
        self.queued_control = 0
        parsed = self.conn.events_received

        def events_received() -> list[Any]:
            events = parsed()
            if self.relays_control:
                for event in events:
                    if isinstance(event, Frame) and event.opcode is Opcode.PING:
                        self.control_to_app(PING_EXTENSION, bytes(event.data))
                    elif isinstance(event, Frame) and event.opcode is Opcode.PONG:
                        if bytes(event.data) != self.pending_ping_payload:  # not uvicorn's keepalive's
                            self.control_to_app(PONG_EVENT, bytes(event.data))
            return events

        self.conn.events_received = events_received  # type: ignore[method-assign]

    def control_to_app(self, kind: str, payload: bytes) -> None:
        if not self.handshake_complete or self.close_sent or self.queued_control >= MAX_QUEUED_CONTROL:
            return
        self.queued_control += 1
        self.queue.put_nowait({"type": kind, "bytes": payload})  # type: ignore[typeddict-item]
        if not self.read_paused:  # as for a message: read on once the app has taken it
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> Any:
        message = await super().receive()
        if message["type"] in (PING_EXTENSION, PONG_EVENT):
            self.queued_control -= 1
        return message

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not self.disconnected and self.initial_response is None:
            return  # the relay closes it with 1001 after shutdown_grace
        super().shutdown()

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == LIMIT_EXTENSION:
            limit: Any = message.get("max_message_bytes")
            # websockets 16 split ``max_size`` into message and fragment limits.
            setattr(self.conn, "max_message_size" if hasattr(self.conn, "max_message_size") else "max_size", limit)
            return
        if message["type"] == RELAY_CONTROL:
            if not self.relays_control:
                self.relays_control = True
                withhold_pongs(self.conn)
            return
        if message["type"] in (PING_EXTENSION, PONG_EVENT):
            await self.writable.wait()
            payload: Any = message.get("bytes")
            if self.handshake_complete and not self.close_sent and not self.transport.is_closing():
                if message["type"] == PING_EXTENSION:
                    self.conn.send_ping(bytes(payload))
                else:
                    self.conn.send_pong(bytes(payload))
                self.transport.write(b"".join(self.conn.data_to_send()))
            return
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True

    def handle_connect(self, event: Request) -> None:
        response = self.conn.accept(event)
        if response.status_code != 101:
            response = _problem_response(response, event.path)
        # uvicorn's handler accepts once more; hand it the answer already made.
        self.conn.accept = lambda request: response  # type: ignore[method-assign]  # noqa: ARG005
        super().handle_connect(event)
        if response.status_code == 101:
            self.scope["extensions"][PING_EXTENSION] = {}  # the app task has not started yet
            self.scope["extensions"][LIMIT_EXTENSION] = {}


def _problem_response(refusal: Response, path: str) -> Response:
    reason = refusal.body.decode("utf-8", "replace").strip() if refusal.body else "invalid handshake"
    error = BadRequest(f"Invalid WebSocket handshake: {reason}")
    log.info("WebSocket %s -> %d %s", path.partition("?")[0], error.status, error.detail)
    status, headers, body = render_problem(error, instance=path.partition("?")[0], request_id=None)
    fields = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
    fields["Connection"] = "close"
    return Response(status, HTTPStatus(status).phrase, fields, body)
