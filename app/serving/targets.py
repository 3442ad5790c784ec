"""Keep the request target as it was on the wire, when it is not a plain path.

uvicorn's httptools protocol parses an absolute-form target
(``GET http://user@host/path``) and hands the app only its path and query: the
authority and any userinfo are lost, so the app cannot check them against
``Host`` (RFC 9112 §3.2.2). This mixin puts such a target (anything that does
not start with ``/``) into the scope under ``wire.REQUEST_TARGET_KEY``; an
origin-form target, nearly every request, costs one byte comparison.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.wire import REQUEST_TARGET_KEY


class RequestTargetMixin(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        if self.url[:1] != b"/":
            self.scope[REQUEST_TARGET_KEY] = self.url  # type: ignore[literal-required]
        super().on_headers_complete()
