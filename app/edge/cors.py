"""CORS per route: preflights answered here, never upstream; CORS headers on the rest.

The route's policy replaces any ``Access-Control-*`` headers the upstream sent,
so one place decides which browser origins may read a route. Errors the gateway
answers itself (401, 429, ...) carry the CORS headers too, or a browser would
hide the status from the page behind a generic network error.
"""

from __future__ import annotations

import httpx

from app.config.edge import Cors
from app.edge.fields import with_fields
from app.edge.origins import OriginPolicy
from app.errors import Forbidden, GatewayError, MethodNotAllowed
from app.proxy.exchange import Exchange, Handler
from app.proxy.routing import CompiledRoute
from app.wire import header_value

# Request headers a browser may send cross-origin without asking (Fetch standard's CORS-safelisted names).
_SAFELISTED = frozenset({b"accept", b"accept-language", b"content-language", b"content-type"})
_CORS_RESPONSE = frozenset(
    {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-expose-headers",
        b"access-control-allow-methods",
        b"access-control-allow-headers",
        b"access-control-max-age",
    }
)


class CorsFilter:
    def __init__(self, route: CompiledRoute, spec: Cors) -> None:
        self._route = route
        self._origin_policy = OriginPolicy(spec)
        self._credentials = spec.allow_credentials
        self._any_method = "*" in spec.allow_methods
        self._methods = frozenset(m.encode() for m in spec.allow_methods)
        self._methods_value = ", ".join(spec.allow_methods).encode()
        self._any_header = "*" in spec.allow_headers
        self._headers = frozenset(h.lower().encode() for h in spec.allow_headers) | _SAFELISTED
        self._headers_value = ", ".join(h for h in spec.allow_headers).encode()
        self._max_age = str(spec.max_age).encode()
        self._expose = ", ".join(spec.expose_headers).encode() if spec.expose_headers else None
        # With credentials (or a list), the origin is echoed and caches must key on it.
        self._echo_origin = self._credentials or not self._origin_policy.any_origin
        self.allows_origin = self._origin_policy.allows
        # Per allowed origin, the fields an actual response gets, made once.
        self._answers: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._refused = [(b"vary", b"Origin")] if self._echo_origin else []

    def _answer_for(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        answer = self._answers.get(origin)
        if answer is None:
            if len(self._answers) >= _MAX_ORIGINS:  # a regex or "*" lets through unboundedly many
                self._answers.clear()
            extra = self._origin_headers(origin)
            if self._expose is not None:
                extra.append((b"access-control-expose-headers", self._expose))
            answer = self._answers[origin] = extra
        return answer

    def _origin_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        out = [(b"access-control-allow-origin", origin if self._echo_origin else b"*")]
        if self._credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        if self._echo_origin:
            out.append((b"vary", b"Origin"))
        return out

    async def __call__(self, exchange: Exchange, call_next: Handler) -> httpx.Response:
        origin = header_value(exchange.headers, b"origin")
        if exchange.method == "OPTIONS":
            requested_method = header_value(exchange.headers, b"access-control-request-method")
            if origin is not None and requested_method is not None:
                requested_headers = header_value(exchange.headers, b"access-control-request-headers")
                return self._preflight(origin, requested_method, requested_headers)
            if not self._route.allows("OPTIONS"):  # let through by the gateway only for preflights
                raise MethodNotAllowed(f"Route {self._route.name!r} does not allow OPTIONS.", allow=self._route.allow)
        if origin is None or not self.allows_origin(origin):
            # The route decides who may read it: an upstream's own CORS headers never reach the browser.
            # With an echoed origin the answer differs by Origin, so caches must key on it either way.
            return with_fields(await call_next(exchange), self._refused, _CORS_RESPONSE)
        extra = self._answer_for(origin)
        try:
            response = await call_next(exchange)
        except GatewayError as exc:
            exc.headers.extend(extra)
            raise
        return with_fields(response, extra, _CORS_RESPONSE)

    def _preflight(self, origin: bytes, method: bytes, requested: bytes | None) -> httpx.Response:
        if not self.allows_origin(origin):
            raise Forbidden(f"CORS: the origin {origin.decode('latin-1')!r} is not allowed on this route.")
        if not self._any_method and method.upper() not in self._methods:
            raise Forbidden(f"CORS: the method {method.decode('latin-1')!r} is not allowed on this route.")
        asked = [h.strip().lower() for h in (requested or b"").split(b",") if h.strip()]
        if not self._any_header:
            refused = [h for h in asked if h not in self._headers]
            if refused:
                names = b", ".join(refused).decode("latin-1")
                raise Forbidden(f"CORS: the header(s) {names} are not allowed on this route.")
        headers = self._origin_headers(origin)
        headers += [
            (b"access-control-allow-methods", method.upper() if self._any_method else self._methods_value),
            (b"access-control-max-age", self._max_age),
            (b"vary", b"Access-Control-Request-Method, Access-Control-Request-Headers"),
            (b"content-length", b"0"),
        ]
        allow_headers = b", ".join(asked) if self._any_header else self._headers_value
        if allow_headers:
            headers.append((b"access-control-allow-headers", allow_headers))
        return httpx.Response(204, headers=headers)


_MAX_ORIGINS = 1024
