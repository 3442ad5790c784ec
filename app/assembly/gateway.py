"""The proxy's ASGI entry point.

``GatehouseApp`` (app.main) sends paths under ``ops_prefix`` to FastAPI and
every other HTTP request here, where it is proxied as plain ASGI, with no
framework routing on the hot path:
normalise the raw path → match a route → check method and body size → build
the upstream request → run the route's pipeline → relay the response.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import chain
from time import perf_counter_ns, time_ns
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from app.assembly.generation import Generation
from app.config.routes import IPNetwork
from app.errors import (
    BadRequest,
    GatewayError,
    HeadersTooLarge,
    InternalError,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    RouteNotFound,
    send_problem,
)
from app.observability.access import AccessLog
from app.observability.metrics import BoundValue, Metrics, RouteMetrics
from app.observability.tracing import Tracer, trace_id_of
from app.outbound.urls import exact_url, origin_text
from app.proxy.body import ClientDisconnected, RequestBody
from app.proxy.clientaddr import client_address, is_trusted
from app.proxy.exchange import Exchange
from app.proxy.forwarding import relay_response
from app.proxy.grpc import is_grpc, send_grpc_error
from app.proxy.headers import VALID_HOST, upstream_request_headers
from app.proxy.routing import CompiledRoute, RouteTable
from app.proxy.urls import normalise_path, upstream_target
from app.wire import REQUEST_TARGET_KEY, RequestId, header_value, sane_request_id

log = logging.getLogger("gatehouse.proxy")


class Gateway:
    """ASGI app that proxies HTTP requests to the routes' upstreams.

    It serves from ``generation`` (see ``app.assembly.generation``), read once per
    request; a reload swaps that one reference. Per request it counts the
    metrics bound to the route at start-up and, when enabled, writes one
    access-log line and records a server span.
    """

    def __init__(
        self,
        generation: Generation,
        *,
        ops_prefix: str,
        metrics: Metrics,
        trusted_proxies: Sequence[IPNetwork] = (),
        max_header_count: int = 100,
        max_header_bytes: int = 16384,
        access_log: AccessLog | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.generation = generation
        self.metrics = metrics
        self._max_header_count = max_header_count
        self._max_header_bytes = max_header_bytes
        self._ops = ops_prefix
        self._ops_slash = ops_prefix + "/"
        self._trusted = tuple(trusted_proxies)
        self._access = access_log
        self.tracer = tracer
        self._in_flight = BoundValue(metrics.in_flight)
        self._no_route = metrics.no_route
        self._origins: dict[tuple[object, ...], str] = {}  # upstream origins as the access log shows them
        self._peers: dict[tuple[str, int], str] = {}  # client (host, port) as the access log shows it

    @property
    def access_log(self) -> AccessLog | None:
        return self._access

    @property
    def routes(self) -> RouteTable:
        return self.generation.routes

    def is_ops_path(self, path: str) -> bool:
        return path == self._ops or path.startswith(self._ops_slash)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = perf_counter_ns()  # integer nanoseconds: the access log formats them without a float
        started_ns = time_ns() if self.tracer is not None else 0
        generation = self.generation
        generation.in_flight += 1
        self._in_flight.inc(1)
        outcome = _Outcome(self._no_route)
        try:
            await self._proxy(scope, receive, send, generation, outcome)
        finally:
            generation.finished_one()
            self._in_flight.inc(-1)
            elapsed = perf_counter_ns() - start
            outcome.metrics.request(scope["method"], outcome.status, elapsed / 1e9)
            if self.tracer is not None:
                span = outcome.span
                if span is None:  # answered before the span began (404, 405, 400, 431...): one all the same
                    span = self._early_span(scope, outcome, started_ns)
                self.tracer.end_server(span, outcome.status)
            if self._access is not None:
                self._log(scope, outcome, elapsed)

    def _log(self, scope: Scope, outcome: _Outcome, elapsed_ns: int) -> None:
        assert self._access is not None
        exchange = outcome.exchange
        upstream = upstream_ns = None
        bytes_in = 0
        if exchange is not None:
            upstream_ns = exchange.upstream_ns
            upstream = origin_text(exchange.url, self._origins) if upstream_ns is not None else None
            bytes_in = exchange.body.received if exchange.body is not None else 0
        client = scope.get("client")
        ip = outcome.client_ip  # not the peer's for a client behind a trusted proxy
        if not client or (ip and ip != client[0]):
            shown_client = ip if client else ""
        else:  # one text per connection, not per request
            if len(self._peers) >= 1024:
                self._peers.clear()
            shown_client = self._peers.get(client) or self._peers.setdefault(client, f"{client[0]}:{client[1]}")
        self._access.emit(  # positional, in emit's order: keywords cost the call twice as much
            outcome.id_for(scope),
            trace_id_of(outcome.traceparent) if outcome.traceparent else None,
            outcome.metrics.name,
            scope["method"],
            scope["path"],
            scope["query_string"],
            outcome.status,
            bytes_in,
            outcome.bytes_out,
            elapsed_ns,
            upstream,
            upstream_ns,
            shown_client,
        )

    def _early_span(self, scope: Scope, outcome: _Outcome, started_ns: int) -> Any:
        assert self.tracer is not None
        route = outcome.route
        return self.tracer.server_span(
            header_value(scope["headers"], b"traceparent"),
            scope,
            route.name if route is not None else None,
            route.prefix if route is not None else None,
            request_id=outcome.id_for(scope).decode(),
            client_address=outcome.client_ip or None,
            start_time=started_ns,
        )

    async def _proxy(
        self, scope: Scope, receive: Receive, send: Send, generation: Generation, outcome: _Outcome
    ) -> None:
        route_name = "-"
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        client = scope.get("client")
        peer = client[0] if client else ""
        client_ip = outcome.client_ip = client_address(peer, headers, self._trusted) if self._trusted else peer
        try:
            check_header_limits(headers, self._max_header_count, self._max_header_bytes)
            target = scope.get(REQUEST_TARGET_KEY)
            if target is not None:
                authority = absolute_form_authority(target)
                if authority is not None:  # it replaces Host (RFC 9112 §3.2.2)
                    headers = [(b"host", authority), *((k, v) for k, v in headers if k != b"host")]
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
            normalised = normalise_path(raw_path)
            route, path = generation.routes.resolve(normalised)
            if route is None:
                raise RouteNotFound(f"No route matches the path {path!r}.")
            route_name = route.name
            outcome.route = route
            metrics = outcome.metrics = generation.metrics[route_name]
            method: str = scope["method"]
            # A CORS preflight is the CORS filter's to answer, whatever the route's methods.
            if not route.allows(method) and not (method == "OPTIONS" and route.edge.cors is not None):
                raise MethodNotAllowed(
                    f"Route {route.name!r} does not allow {method}.",
                    allow=route.allow,
                )
            trusted = bool(self._trusted) and is_trusted(peer, self._trusted)
            server = scope.get("server")
            try:
                inbound = upstream_request_headers(
                    headers,
                    route.headers,
                    client_ip=peer,
                    scheme=scope["scheme"],
                    trusted=trusted,
                    real_ip=client_ip,
                    server_port=server[1] if server else None,
                    require_host=scope["http_version"] == "1.1",
                )
            except ValueError as exc:
                raise BadRequest(f"Malformed request headers: {exc}.") from None
            request_id = outcome.request_id = inbound.request_id
            outcome.traceparent = inbound.traceparent
            span = None
            if self.tracer is not None:
                span = outcome.span = self.tracer.server_span(
                    inbound.incoming_traceparent,
                    scope,
                    route_name,
                    route.prefix,
                    request_id=request_id.decode(),
                    client_address=client_ip,
                )
                outcome.traceparent = self.tracer.traceparent(span)
            limit = route.max_body_bytes
            length = inbound.content_length
            if limit is not None and length is not None and length > limit:
                raise PayloadTooLarge(f"The request body ({length} bytes) exceeds this route's limit of {limit}.")
            body = None
            if inbound.chunked or length:
                body = RequestBody(receive, limit, route.timeouts.write)
            elif length is None and scope["http_version"] == "2" and method not in BODYLESS:
                # HTTP/2 frames a body without Content-Length (gRPC always does): pass it on chunked.
                body = RequestBody(receive, limit, route.timeouts.write)
                inbound.headers.append((b"transfer-encoding", b"chunked"))
            trailers = route.http2 and accepts_trailers(scope)
            if trailers:
                inbound.headers.append((b"te", b"trailers"))
            target = upstream_target(
                route.upstream.base_path,
                route.prefix,
                route.strip_prefix,
                path,
                scope["query_string"],
            )
            assert generation.clients is not None, "the lifespan opens the generation"
            # Positional, in the field order of ``Exchange``: keywords cost its generated __init__ 2.3x as much.
            # fmt: off
            exchange = outcome.exchange = Exchange(
                route, method, _with_target(generation.origins[route_name], target), inbound.headers, body,
                request_id, client_ip, generation.clients.for_route(route_name), client_cert_subject(scope),
                None, None, metrics, span, self.tracer, trailers,  # identity, upstream_auth: filters set them
            )
            # fmt: on
            response = await generation.handlers[route_name](exchange)
        except GatewayError as exc:
            outcome.status = exc.status
            if isinstance(exc, RateLimited):
                outcome.metrics.rate_limited.inc()
            outcome.bytes_out = await self._answer_error(exc, scope, send, route_name, outcome)
            return
        except ClientDisconnected:
            outcome.status = CLIENT_CLOSED
            log.info(
                "client disconnected before the upstream answered",
                extra={"route": route_name, "request_id": outcome.id_for(scope).decode()},
            )
            return
        except Exception:
            log.exception(
                "unexpected error while proxying",
                extra={"route": route_name, "request_id": outcome.id_for(scope).decode()},
            )
            error = InternalError("The gateway failed unexpectedly; the error is in its log.")
            outcome.status = error.status
            outcome.bytes_out = await self._answer_error(error, scope, send, route_name, outcome)
            return
        outcome.status = response.status_code
        try:
            outcome.bytes_out = await relay_response(exchange, response, send, receive)
        except Exception:
            # The status line may be out already: the connection is cut, the log says why.
            log.exception(
                "unexpected error while relaying the response",
                extra={"route": route_name, "request_id": outcome.id_for(scope).decode()},
            )

    async def _answer_error(self, exc: GatewayError, scope: Scope, send: Send, route: str, outcome: _Outcome) -> int:
        rid = outcome.id_for(scope).decode()
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
        if is_grpc(header_value(scope["headers"], b"content-type")):
            await send_grpc_error(send, exc, request_id=rid, trailers=server_sends_trailers(scope))
            return 0
        return await send_problem(send, exc, instance=scope["path"], request_id=rid)


# Methods whose HTTP/2 requests are taken to have no body unless they say how long it is.
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


def server_sends_trailers(scope: Scope) -> bool:
    """Whether the server can send trailers (the ASGI ``http.response.trailers`` extension)."""
    extensions = scope.get("extensions") or {}
    return "http.response.trailers" in extensions


def accepts_trailers(scope: Scope) -> bool:
    """The client said ``TE: trailers`` and the server can send them."""
    if not server_sends_trailers(scope):
        return False
    te = header_value(scope["headers"], b"te")
    return te is not None and b"trailers" in te.lower()


CLIENT_CLOSED = 499  # nginx's status for "the client went away before the answer"


class _Outcome:
    """What the access log and metrics need to know about one request, filled in as it goes."""

    __slots__ = (
        "metrics",
        "route",
        "status",
        "bytes_out",
        "request_id",
        "traceparent",
        "exchange",
        "span",
        "client_ip",
    )

    def __init__(self, metrics: RouteMetrics) -> None:
        self.metrics = metrics
        self.status = 500
        self.bytes_out = 0
        self.request_id: RequestId | None = None
        self.traceparent: bytes | None = None
        self.exchange: Exchange | None = None
        self.span: Any = None
        self.client_ip = ""
        self.route: CompiledRoute | None = None

    def id_for(self, scope: Scope) -> RequestId:
        """The request's one id: the client's if sane, else a new one, made once and then kept."""
        if self.request_id is None:
            self.request_id = sane_request_id(header_value(scope["headers"], b"x-request-id"))
        return self.request_id


def check_header_limits(headers: list[tuple[bytes, bytes]], max_count: int, max_bytes: int) -> None:
    """Raise ``HeadersTooLarge`` for more than ``max_count`` fields or ``max_bytes`` of them."""
    if len(headers) > max_count:
        raise HeadersTooLarge(f"The request has {len(headers)} header fields; at most {max_count}.")
    size = sum(map(len, chain.from_iterable(headers)))  # C-level loop: this runs per request
    if size > max_bytes:
        raise HeadersTooLarge(f"The request's header fields total {size} bytes; at most {max_bytes}.")


def _with_target(origin: httpx.URL, target: bytes) -> httpx.URL:
    """``origin`` with ``target`` (already canonical, see ``app.proxy.urls``) as its path and query."""
    path, _, query = target.decode("ascii").partition("?")
    return exact_url(origin, path, query or None)


def client_cert_subject(scope: Scope) -> str | None:
    """The verified client certificate's subject, from the ASGI TLS extension (``app.serving`` provides it)."""
    extensions = scope.get("extensions")
    tls = extensions.get("tls") if extensions else None
    return tls.get("client_cert_name") if tls else None


def client_request_id(scope: Scope) -> RequestId:
    return sane_request_id(header_value(scope["headers"], b"x-request-id"))


def absolute_form_authority(target: bytes) -> bytes | None:
    """The authority of an absolute-form target (None for authority- or asterisk-form).

    RFC 9112 §3.2.2: the server uses it instead of Host, so it must pass the same
    check as Host; userinfo (``http://user@host/``) is refused outright (RFC 9110 §4.2.4).
    The other forms are refused by the method and path checks.
    """
    scheme, sep, rest = target.partition(b"://")
    if not sep:
        return None
    authority = rest.split(b"/", 1)[0].split(b"?", 1)[0]
    if b"@" in authority:
        raise BadRequest("The request target has userinfo (user@host), which is not allowed.")
    if scheme.lower() not in (b"http", b"https") or not VALID_HOST.match(authority):
        raise BadRequest("The request target's scheme or authority is not valid.")
    return authority
