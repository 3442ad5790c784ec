"""The request pipeline: an ``Exchange`` passes through filters to the upstream.

A filter is ``async (exchange, call_next) -> httpx.Response``: it may refuse
(raise a ``GatewayError``), rewrite the exchange before calling on, answer by
itself (return a response it built), or wrap what comes back (retries, metrics).
Later capabilities (auth, rate limits, CORS, retries) plug in here, per route,
without touching forwarding. Chains are composed once, at start-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from app.observability.metrics import RouteMetrics
from app.observability.tracing import Tracer
from app.proxy.body import RequestBody
from app.proxy.routing import CompiledRoute


@dataclass(slots=True)
class Exchange:
    """One proxied request on its way upstream: what the filters and the endpoint share, and no more.

    Built by the gateway once the route is known; a unit test builds one with a
    ``CompiledRoute``, a method, a URL and headers, without sockets.
    """

    route: CompiledRoute
    method: str
    url: httpx.URL
    headers: list[tuple[bytes, bytes]]
    body: RequestBody | None = None
    request_id: bytes = b"-"
    client_ip: str = ""
    client: httpx.AsyncClient | None = None  # the route's client on the plain path (pools pick per target)
    client_cert_subject: str | None = None  # the verified TLS client certificate's subject (RFC 4514), if any
    identity: str | None = None  # set by inbound auth: the key name, JWT subject or user
    upstream_auth: httpx.Auth | None = None  # set by the upstream_auth filter, applied by send_upstream
    metrics: RouteMetrics | None = None  # the route's pre-bound metric children
    span: Any = None  # the OpenTelemetry server span, when tracing is on
    tracer: Tracer | None = None
    trailers: bool = False  # relay the upstream's trailers (the client accepts them, the server sends them)
    attempts: int = 0  # upstream attempts so far (more than one: retries)
    upstream_ns: int | None = None  # the last attempt's time to response headers, in nanoseconds


Handler = Callable[[Exchange], Awaitable[httpx.Response]]


class Filter(Protocol):
    async def __call__(self, exchange: Exchange, call_next: Handler) -> httpx.Response: ...


# Builds a route's filter from its settings at start-up, or None if the route does not use it.
FilterFactory = Callable[[CompiledRoute], Filter | None]


def chain_for(route: CompiledRoute, factories: Sequence[FilterFactory], endpoint: Handler) -> Handler:
    """The route's handler: the filters its settings ask for, around ``endpoint``."""
    filters = [f for factory in factories if (f := factory(route)) is not None]
    return build_chain(filters, endpoint)


def build_chain(filters: Sequence[Filter], endpoint: Handler) -> Handler:
    """Compose ``filters`` (outermost first) around ``endpoint``."""
    handler = endpoint
    for outer in reversed(filters):
        handler = _bind(outer, handler)
    return handler


def _bind(outer: Filter, inner: Handler) -> Handler:
    async def call(exchange: Exchange) -> httpx.Response:
        return await outer(exchange, inner)

    return call
