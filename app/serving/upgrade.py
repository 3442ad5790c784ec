"""``Upgrade`` to anything but WebSocket, below ASGI.

Once a request says ``Connection: upgrade``, the HTTP parser treats whatever
follows its header block as the new protocol's bytes. uvicorn hands a
WebSocket upgrade to its ``ws`` protocol, and serves any other upgrade as a
plain request, but the parser no longer reads that request's body: the app
would wait for a body that never comes, holding an upstream connection until
the read timeout. So ``UnsupportedUpgrade``:

- refuses such a request that announces a body (400 problem+json, then close),
  before the app sees it;
- serves one without a body as plain HTTP/1.1 (RFC 9110 §7.8 lets a server
  ignore ``Upgrade``, and ``curl --http2`` on ``http://`` relies on that; the
  gateway never forwards ``Upgrade``), then closes the connection, since the
  parser's state after it cannot be trusted.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.errors import BadRequest, render_problem
from app.wire import header_value, new_request_id

log = logging.getLogger("gatehouse")


class UnsupportedUpgrade(HttpToolsProtocol):
    refused_upgrade = False

    def on_headers_complete(self) -> None:
        if not self.parser.should_upgrade() or self._should_upgrade():
            super().on_headers_complete()
            return
        length = header_value(self.headers, b"content-length")
        if header_value(self.headers, b"transfer-encoding") is not None or (length is not None and length != b"0"):
            self.refuse_upgrade()
            return
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.keep_alive = False

    def refuse_upgrade(self) -> None:
        self.refused_upgrade = True
        rid = new_request_id().decode()
        upgrade = (header_value(self.headers, b"upgrade") or b"").decode("latin-1")
        log.info("400: Upgrade %r with a request body refused (request id %s)", upgrade, rid)
        error = BadRequest(f"Upgrade to {upgrade!r} is not supported on a request with a body.")
        status, headers, body = render_problem(error, instance=None, request_id=rid)
        head = [STATUS_LINE[status]]
        for name, value in [*self.server_state.default_headers, *headers, (b"connection", b"close")]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()

    def on_body(self, body: bytes) -> None:
        if not self.refused_upgrade:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused_upgrade:
            super().on_message_complete()

    def _unsupported_upgrade_warning(self) -> None:
        if not self.refused_upgrade:  # served as plain HTTP/1.1; uvicorn's warning would say so on every one
            log.debug("Upgrade %r ignored", header_value(self.headers, b"upgrade"))
