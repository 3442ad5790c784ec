"""The proxy's ASGI entry point.

``GatehouseApp`` (app.main) sends paths under ``ops_prefix`` to FastAPI and
every other HTTP request here, where it is proxied as plain ASGI, with no
framework routing on the hot path:
normalise the raw path → match a route → check method and body size → build
the upstream request → run the route's pipeline → relay the response.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING

import httpx
from starlette.types import Receive, Scope, Send

from app.errors import (
    BadRequest,
    GatewayError,
    HeadersTooLarge,
    InternalError,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    render_problem,
)
from app.proxy.body import ClientDisconnected, RequestBody
from app.proxy.forwarding import relay_response, send_upstream
from app.proxy.headers import sane_request_id, upstream_request_headers
from app.proxy.pipeline import Exchange, FilterFactory, Handler, chain_for
from app.proxy.routing import CompiledRoute, RouteTable
from app.proxy.urls import normalise_path, upstream_target
from app.settings import IPNetwork

if TYPE_CHECKING:
    from app.resilience.upstreams import Upstreams

log = logging.getLogger("gatehouse.proxy")


class Gateway:
    """ASGI app that proxies HTTP requests to the routes' upstreams."""

    def __init__(
        self,
        *,
        routes: RouteTable,
        ops_prefix: str,
        trusted_proxies: Sequence[IPNetwork] = (),
        filters: Sequence[FilterFactory] = (),
        max_header_count: int = 100,
        max_header_bytes: int = 16384,
        upstreams: Upstreams | None = None,
    ) -> None:
        self.routes = routes
        self._max_header_count = max_header_count
        self._max_header_bytes = max_header_bytes
        self._ops = ops_prefix
        self._ops_slash = ops_prefix + "/"
        self._trusted = tuple(trusted_proxies)
        self._handlers = {
            route.name: chain_for(route, filters, self._endpoint(route, upstreams)) for route in routes.routes
        }
        self._origins = {route.name: httpx.URL(route.upstream.origin) for route in routes.routes}

    @staticmethod
    def _endpoint(route: CompiledRoute, upstreams: Upstreams | None) -> Handler:
        return send_upstream if upstreams is None else upstreams.endpoint_for(route)

    def is_ops_path(self, path: str) -> bool:
        return path == self._ops or path.startswith(self._ops_slash)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._proxy(scope, receive, send)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id: bytes | None = None
        route_name = "-"
        try:
            self._check_header_limits(scope["headers"])
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
            normalised = normalise_path(raw_path)
            route = self.routes.resolve(normalised)
            if route is None:
                raise RouteNotFound(f"No route matches the path {normalised.path!r}.")
            route_name = route.name
            method: str = scope["method"]
            # A CORS preflight is the CORS filter's to answer, whatever the route's methods.
            if not route.allows(method) and not (method == "OPTIONS" and route.route.cors is not None):
                raise MethodNotAllowed(
                    f"Route {route.name!r} does not allow {method}.",
                    allow=route.allow,
                )
            client = scope.get("client")
            client_ip = client[0] if client else ""
            trusted = bool(self._trusted) and _is_trusted(client_ip, self._trusted)
            try:
                inbound = upstream_request_headers(
                    scope["headers"],
                    route.headers,
                    client_ip=client_ip,
                    scheme=scope["scheme"],
                    trusted=trusted,
                )
            except ValueError as exc:
                raise BadRequest(f"Malformed request headers: {exc}.") from None
            request_id = inbound.request_id
            limit = route.max_body_bytes
            length = inbound.content_length
            if limit is not None and length is not None and length > limit:
                raise PayloadTooLarge(f"The request body ({length} bytes) exceeds this route's limit of {limit}.")
            body = RequestBody(receive, limit, route.timeouts.write) if inbound.chunked or length else None
            target = upstream_target(
                route.upstream.base_path,
                route.prefix,
                route.strip_prefix,
                normalised.path,
                scope["query_string"],
            )
            exchange = Exchange(
                route=route,
                client=scope["state"]["clients"].for_route(route.name),
                method=method,
                url=_with_target(self._origins[route.name], target),
                headers=inbound.headers,
                body=body,
                request_id=request_id,
                client_ip=client_ip,
                scope=scope,
            )
            response = await self._handlers[route.name](exchange)
        except GatewayError as exc:
            await self._answer_error(exc, scope, send, route_name, request_id)
            return
        except ClientDisconnected:
            log.info("client disconnected before the upstream answered", extra={"route": route_name})
            return
        except Exception:
            log.exception("unexpected error while proxying", extra={"route": route_name})
            error = InternalError("The gateway failed unexpectedly; the error is in its log.")
            await self._answer_error(error, scope, send, route_name, request_id)
            return
        try:
            await relay_response(exchange, response, send, receive)
        except Exception:
            # The status line may be out already: the connection is cut, the log says why.
            log.exception("unexpected error while relaying the response", extra={"route": route_name})

    def _check_header_limits(self, headers: list[tuple[bytes, bytes]]) -> None:
        if len(headers) > self._max_header_count:
            raise HeadersTooLarge(f"The request has {len(headers)} header fields; at most {self._max_header_count}.")
        size = sum(map(len, chain.from_iterable(headers)))  # C-level loop: this runs per request
        if size > self._max_header_bytes:
            raise HeadersTooLarge(f"The request's header fields total {size} bytes; at most {self._max_header_bytes}.")

    async def _answer_error(
        self, exc: GatewayError, scope: Scope, send: Send, route: str, request_id: bytes | None
    ) -> None:
        rid = (request_id or _client_request_id(scope)).decode()
        level = logging.WARNING if exc.status >= 500 else logging.INFO
        log.log(
            level,
            "%s %s -> %d %s",
            scope["method"],
            scope["path"],
            exc.status,
            exc.detail,
            extra={"route": route, "request_id": rid},
        )
        status, headers, body = render_problem(exc, instance=scope["path"], request_id=rid)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _with_target(origin: httpx.URL, target: bytes) -> httpx.URL:
    """``origin`` with ``target`` as its path and query, byte for byte.

    httpx's public constructors re-quote the path and query (``|`` becomes
    ``%7C``, a stray ``%`` becomes ``%25``), which breaks signed URLs; the
    target is already canonical here (see ``urls``), so it is set as is.
    """
    path, _, query = target.decode("ascii").partition("?")
    base = origin._uri_reference
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = type(base)(base.scheme, base.userinfo, base.host, base.port, path, query or None, None)
    return url


def _client_request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return sane_request_id(value)
    return sane_request_id(None)


@functools.lru_cache(maxsize=4096)
def _is_trusted(client_ip: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in network for network in networks)
