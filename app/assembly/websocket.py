"""The proxy's WebSocket entry point: ASGI ``websocket`` scopes.

A handshake is checked as a request is (header limits → normalise the path →
match a route → the route must take WebSockets → build the upstream headers),
then runs the route's filters for handshakes (``assembly/filters.py``, with
``websocket=True``: origin, rate limits, auth, upstream credentials), all before
the upstream is contacted. Then the upstream handshake: a refusal (4xx/5xx) is
passed to the client with its status, headers and body; an unreachable upstream
is a 502 (504 on timeout) problem+json. Only after the upstream said 101 is the
client accepted, with the subprotocol the upstream chose, and the messages are
relayed (``app.proxy.websocket``) until one side closes, a limit is reached, or
the process drains: open sockets get ``shutdown_grace``, then a 1001 close.

Refusals use the ASGI ``websocket.http.response`` extension, which uvicorn
offers; a server without it can only refuse with a bare 403.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from time import perf_counter_ns

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from app.assembly.drain import Drain
from app.assembly.gateway import (
    CLIENT_CLOSED,
    Gateway,
    check_header_limits,
    client_cert_subject,
    client_request_id,
)
from app.config.routes import IPNetwork
from app.errors import BadRequest, GatewayError, InternalError, RateLimited, RouteNotFound, render_problem
from app.observability.access import AccessLog
from app.outbound.websocket import HandshakeRefused
from app.proxy.clientaddr import client_address, is_trusted
from app.proxy.exchange import Exchange
from app.proxy.headers import upstream_request_headers
from app.proxy.urls import normalise_path, upstream_target
from app.proxy.websocket import LIMIT_EXTENSION, PING_EXTENSION, RELAY_CONTROL, RelayOutcome, relay
from app.resilience.websocket import connect_upstream, relay_limits
from app.wire import HOP_BY_HOP, RequestId

log = logging.getLogger("gatehouse.proxy")

# Fields of the client's handshake that belong to its hop: the upstream handshake makes its own.
_HANDSHAKE_ONLY = frozenset(
    {
        b"host",
        b"content-length",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)
# Fields of an upstream's answer never passed to the client (it gets the serving gateway's own).
_ANSWER_DROP = HOP_BY_HOP | _HANDSHAKE_ONLY | {b"date", b"server", b"x-request-id"}


class WebSocketGateway:
    """ASGI app for ``websocket`` scopes; shares the HTTP gateway's generation, metrics and access log."""

    def __init__(
        self,
        gateway: Gateway,
        drain: Drain,
        *,
        shutdown_grace: float,
        drain_delay: float = 0.0,
        trusted_proxies: Sequence[IPNetwork] = (),
        max_header_count: int = 100,
        max_header_bytes: int = 16384,
        access_log: AccessLog | None = None,
    ) -> None:
        self.gateway = gateway
        self._drain = drain
        self._grace = shutdown_grace
        self._drain_delay = drain_delay
        self._trusted = tuple(trusted_proxies)
        self._max_header_count = max_header_count
        self._max_header_bytes = max_header_bytes
        self._access = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = perf_counter_ns()
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left before the handshake was read
        # uvicorn's websockets implementation keeps the handshake's header case; ASGI names are lower-case.
        scope["headers"] = [(name.lower(), value) for name, value in scope["headers"]]
        ended = _Ended()
        try:
            await self._serve(scope, receive, send, ended)
        except Exception:
            log.exception("unexpected error while proxying a WebSocket", extra={"route": ended.route})
            if not ended.accepted:
                error = InternalError("The gateway failed unexpectedly; the error is in its log.")
                ended.status = error.status
                await self._refuse(scope, send, error, ended)
        finally:
            self._log(scope, ended, perf_counter_ns() - start)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, ended: _Ended) -> None:
        generation = self.gateway.generation
        try:
            check_header_limits(scope["headers"], self._max_header_count, self._max_header_bytes)
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
            normalised = normalise_path(raw_path)
            route, path = generation.routes.resolve(normalised)
            if route is None:
                raise RouteNotFound(f"No route matches the path {path!r}.")
            ended.route = route.name
            handler = generation.websocket_handlers.get(route.name)
            spec = route.resilience.websocket
            if handler is None or spec is None:
                raise BadRequest(f"Route {route.name!r} does not accept WebSocket connections.")
            client = scope.get("client")
            peer = client[0] if client else ""
            client_ip = client_address(peer, scope["headers"], self._trusted)
            trusted = bool(self._trusted) and is_trusted(peer, self._trusted)
            try:
                inbound = upstream_request_headers(
                    scope["headers"],
                    route.headers,
                    client_ip=peer,
                    scheme="https" if scope.get("scheme") == "wss" else "http",
                    trusted=trusted,
                    real_ip=client_ip,
                    require_host=True,
                )
            except ValueError as exc:
                raise BadRequest(f"Malformed request headers: {exc}.") from None
            ended.request_id = inbound.request_id
            target = upstream_target(
                route.upstream.base_path, route.prefix, route.strip_prefix, path, scope["query_string"]
            )
            exchange = Exchange(
                route=route,
                method="GET",
                url=httpx.URL(route.upstream.origin),
                headers=inbound.headers,
                request_id=inbound.request_id,
                client_ip=client_ip,
                client_cert_subject=client_cert_subject(scope),
                metrics=generation.metrics[route.name],
            )
            passed = await handler(exchange)
            if passed.status_code != 101:  # a filter answered by itself
                raise BadRequest(f"Route {route.name!r} answered the WebSocket handshake with {passed.status_code}.")
            headers = [(k, v) for k, v in exchange.headers if k not in _HANDSHAKE_ONLY]
            if exchange.upstream_auth is not None:
                headers = await _with_upstream_auth(exchange, headers)
            # Pings and pongs are relayed end to end where the server can carry them (app.proxy.websocket).
            relay_control = PING_EXTENSION in scope.get("extensions", {})
            upstream = await connect_upstream(
                route,
                spec,
                generation.pools.pools.get(route.name),
                target,
                headers,
                scope.get("subprotocols") or (),
                relay_control=relay_control,
            )
        except GatewayError as exc:
            ended.status = exc.status
            if isinstance(exc, RateLimited):
                generation.metrics[ended.route].rate_limited.inc()
            await self._refuse(scope, send, exc, ended)
            return
        except HandshakeRefused as refused:
            ended.status = refused.status
            ended.upstream = refused.origin
            await _deny(send, refused.status, _answer_headers(refused.headers), refused.body)
            return
        ended.upstream = upstream.origin
        metrics = generation.websocket_metrics[route.name]
        metrics.open.inc()
        try:
            if relay_control:
                await send({"type": RELAY_CONTROL})  # before the accept: no ping is answered by the server
            answer = upstream.connection.response
            await send(
                {
                    "type": "websocket.accept",
                    "subprotocol": upstream.connection.subprotocol,
                    "headers": _answer_headers(
                        [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.raw_items()]
                        if answer is not None
                        else []
                    )
                    + list(route.headers.set_response),
                }
            )
            ended.accepted = True
            ended.status = 101
            if LIMIT_EXTENSION in scope.get("extensions", {}):
                await send({"type": LIMIT_EXTENSION, "max_message_bytes": spec.max_message_bytes})
            ended.outcome = await relay(
                receive,
                send,
                upstream.connection,
                relay_limits(spec),
                metrics,
                self._closing,
            )
        finally:
            metrics.open.dec()
            upstream.release()
            await upstream.connection.close()

    async def _closing(self) -> None:
        """Return when open WebSockets must close: at the end of ``shutdown_grace``, less a margin.

        The grace starts when the listener closes, ``drain_delay`` after the
        signal. uvicorn cancels whatever still runs once the grace is over;
        closing a moment before lets every socket send its 1001 and hear the reply.
        """
        await self._drain.wait()
        started = (self._drain.started_at or time.monotonic()) + self._drain_delay
        close_at = started + max(0.0, self._grace - min(1.0, self._grace / 4))
        await anyio.sleep(max(0.0, close_at - time.monotonic()))

    async def _refuse(self, scope: Scope, send: Send, exc: GatewayError, ended: _Ended) -> None:
        rid = (ended.request_id or client_request_id(scope)).decode()
        level = logging.WARNING if exc.status >= 500 else logging.INFO
        log.log(level, "WebSocket %s -> %d %s", scope["path"], exc.status, exc.detail, extra={"route": ended.route})
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})  # the server answers 403
            return
        status, headers, body = render_problem(exc, instance=scope["path"], request_id=rid)
        await _deny(send, status, headers, body)

    def _log(self, scope: Scope, ended: _Ended, elapsed_ns: int) -> None:
        if self._access is None:
            return
        client = scope.get("client")
        outcome = ended.outcome
        self._access.emit(
            request_id=ended.request_id or client_request_id(scope),
            trace_id=None,
            route=ended.route,
            method="GET",
            path=scope["path"],
            query=scope["query_string"],
            status=ended.status if outcome is not None or not ended.accepted else CLIENT_CLOSED,
            bytes_in=outcome.bytes["to_upstream"] if outcome else 0,
            bytes_out=outcome.bytes["to_client"] if outcome else 0,
            duration_ns=elapsed_ns,
            upstream=ended.upstream,
            upstream_ns=None,
            client=f"{client[0]}:{client[1]}" if client else "",
            close_code=outcome.close_code if outcome is not None else None,
        )


class _Ended:
    """What the access log needs about one WebSocket, filled in as it goes."""

    __slots__ = ("route", "status", "request_id", "upstream", "accepted", "outcome")

    def __init__(self) -> None:
        self.route = "-"
        self.status = 500
        self.request_id: RequestId | None = None
        self.upstream: str | None = None
        self.accepted = False
        self.outcome: RelayOutcome | None = None


async def _deny(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [(k, v) for k, v in headers if k != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _answer_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k not in _ANSWER_DROP]


async def _with_upstream_auth(exchange: Exchange, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with the route's upstream credentials applied, as httpx would apply them to a request."""
    assert exchange.upstream_auth is not None
    request = httpx.Request("GET", exchange.url, headers=headers)
    flow = exchange.upstream_auth.async_auth_flow(request)
    signed = await flow.__anext__()
    await flow.aclose()
    return [(k.lower(), v) for k, v in signed.headers.raw]
