"""Under uvicorn: the TLS client certificate's subject in each request's scope (ASGI TLS extension).

The same for WebSocket handshakes is ``websocket_protocol.WebSocketClientCertificateMixin``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.serving.tls import tls_extension


class ClientCertificateMixin(HttpToolsProtocol):
    """Reads the peer certificate once per connection and adds it to every request's scope."""

    _tls_extension: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        self._tls_extension = tls_extension(ssl_object) if ssl_object is not None else None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls_extension is not None:
            self.scope["extensions"] = {"tls": self._tls_extension}  # type: ignore[dict-item]
