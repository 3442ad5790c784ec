"""Under uvicorn: the TLS client certificate's subject in each request's and WebSocket's scope (ASGI TLS extension)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

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


class WebSocketClientCertificateMixin(WebSocketsSansIOProtocol):
    """The same for WebSocket handshakes (uvicorn's ``ws`` protocol), so ``auth: mtls`` covers them too."""

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
