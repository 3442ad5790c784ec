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
  with 400 and a problem+json body, like every other refusal, and logged.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from app.errors import BadRequest, render_problem

log = logging.getLogger("gatehouse.proxy")


class GatehouseWebSocketProtocol(WebSocketsSansIOProtocol):
    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not self.disconnected and self.initial_response is None:
            return  # the relay closes it with 1001 after shutdown_grace
        super().shutdown()

    async def send(self, message: ASGISendEvent) -> None:
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


def _problem_response(refusal: Response, path: str) -> Response:
    reason = refusal.body.decode("utf-8", "replace").strip() if refusal.body else "invalid handshake"
    error = BadRequest(f"Invalid WebSocket handshake: {reason}")
    log.info("WebSocket %s -> %d %s", path.partition("?")[0], error.status, error.detail)
    status, headers, body = render_problem(error, instance=path.partition("?")[0], request_id=None)
    fields = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
    fields["Connection"] = "close"
    return Response(status, HTTPStatus(status).phrase, fields, body)
