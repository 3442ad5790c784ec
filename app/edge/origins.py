"""Which browser origins may use a route: one policy for CORS and for WebSocket handshakes.

Browsers enforce CORS on fetches, but not on WebSockets: any page may open a
WebSocket to any host, with the user's cookies. The server must check
``Origin`` itself, so ``WebSocketOriginFilter`` refuses a handshake whose
origin the route's CORS policy does not allow, before the upstream is
contacted. A route without a CORS policy accepts same-origin pages only
(``Origin`` naming the host the client asked for), the safe default that
Gorilla WebSocket and Django Channels also chose. Clients that are not
browsers send no ``Origin`` and are left to the route's auth.
"""

from __future__ import annotations

import re

import httpx

from app.config.edge import Cors
from app.errors import Forbidden
from app.proxy.exchange import Exchange, Handler
from app.wire import header_value

_DEFAULT_PORTS = {b"http": b"80", b"https": b"443"}


class OriginPolicy:
    """The origins a route's ``cors`` settings allow: exact ones, ``*``, or a full-match regex."""

    def __init__(self, spec: Cors) -> None:
        self.any_origin = "*" in spec.allow_origins
        self._origins = frozenset(o.encode() for o in spec.allow_origins if o != "*")
        self._regex = re.compile(spec.allow_origin_regex.encode()) if spec.allow_origin_regex else None

    def allows(self, origin: bytes) -> bool:
        if self.any_origin or origin in self._origins:
            return True
        return self._regex is not None and self._regex.fullmatch(origin) is not None


def same_origin(origin: bytes, host: bytes | None) -> bool:
    """Whether ``origin`` (``scheme://host[:port]``) names ``host`` (the Host the client asked for)."""
    if host is None:
        return False
    scheme, sep, authority = origin.lower().partition(b"://")
    if not sep or scheme not in _DEFAULT_PORTS:
        return False
    return _with_port(authority, scheme) == _with_port(host.lower(), scheme)


def _with_port(authority: bytes, scheme: bytes) -> bytes:
    # "[::1]:8000", "a.test:443", "a.test": compare with the port always written.
    has_port = authority.rfind(b":") > authority.rfind(b"]")
    return authority if has_port else authority + b":" + _DEFAULT_PORTS[scheme]


class WebSocketOriginFilter:
    """Refuses (403) a WebSocket handshake from a browser origin the route does not allow."""

    def __init__(self, route_name: str, policy: OriginPolicy | None) -> None:
        self._route = route_name
        self._policy = policy

    async def __call__(self, exchange: Exchange, call_next: Handler) -> httpx.Response:
        origin = header_value(exchange.headers, b"origin")
        if origin is not None and not self._allows(origin, exchange):
            shown = origin.decode("latin-1")
            raise Forbidden(f"The origin {shown!r} may not open WebSockets on the route {self._route!r}.")
        return await call_next(exchange)

    def _allows(self, origin: bytes, exchange: Exchange) -> bool:
        if self._policy is not None:
            return self._policy.allows(origin)
        # The gateway sets X-Forwarded-Host to the Host the client asked for (a trusted proxy's, if any).
        return same_origin(origin, header_value(exchange.headers, b"x-forwarded-host"))
