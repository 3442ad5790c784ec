"""The one list that says in which order a route's filters run.

Outermost first:

0. client addresses (``allow_ips`` / ``deny_ips``): a refused address gets nothing else, not even CORS;
1. CORS: a preflight is answered before anything else, and errors get CORS headers;
2. rate limit keyed by client IP or header: before auth, so unauthenticated floods are limited too;
3. inbound auth: who is calling;
4. rate limit keyed by identity (``api_key``, ``subject``): needs auth's answer;
5. upstream credentials: what Gatehouse presents upstream;
6. bulkhead (``max_concurrent``): last, so only requests that passed every other filter take a slot.

Then the route's endpoint (``send_upstream``, or the pooled endpoint with
retries and balancing). A route that sets none of these gets no filter at all.
A new filter is one ``FilterFactory`` added here, in its place.

A WebSocket handshake (``websocket=True``) runs the same list with two changes:
CORS becomes the origin check (browsers do not apply CORS to WebSockets, so a
refused ``Origin`` gets 403 here, before the upstream is contacted, and a route
without CORS accepts same-origin pages only: ``app.edge.origins``), and there is
no bulkhead, since a WebSocket is not a request in flight (its limits are in
``app.resilience.websocket``).
"""

from __future__ import annotations

from app.edge.addresses import AddressFilter
from app.edge.auth import AuthFilter, build_verifier
from app.edge.cors import CorsFilter
from app.edge.credentials import UpstreamAuthFilter
from app.edge.origins import OriginPolicy, WebSocketOriginFilter
from app.edge.resources import EdgeResources
from app.outbound.auth import build_upstream_auth
from app.proxy.exchange import Filter, FilterFactory
from app.proxy.routing import CompiledRoute
from app.resilience.pools import RoutePools

_BY_IDENTITY = ("api_key", "subject")


def route_filters(edge: EdgeResources, pools: RoutePools, *, websocket: bool = False) -> list[FilterFactory]:
    """The filter factories, outermost first (see the module docstring); ``websocket``: for handshakes."""

    def addresses(route: CompiledRoute) -> Filter | None:
        spec = route.route
        return AddressFilter(spec.allow_ips, spec.deny_ips) if spec.allow_ips is not None or spec.deny_ips else None

    def cors(route: CompiledRoute) -> Filter | None:
        spec = route.edge.cors
        return CorsFilter(route, spec) if spec is not None else None

    def websocket_origin(route: CompiledRoute) -> Filter | None:
        spec = route.edge.cors
        return WebSocketOriginFilter(route.name, OriginPolicy(spec) if spec is not None else None)

    def rate_limit_by_client(route: CompiledRoute) -> Filter | None:
        spec = route.edge.rate_limit
        if spec is None or spec.key in _BY_IDENTITY:
            return None
        from app.edge.ratelimit import RateLimitFilter  # here: ``limits`` only for routes with a rate limit

        return RateLimitFilter(route.name, spec, lambda: edge.rate_limits)

    def auth(route: CompiledRoute) -> Filter | None:
        spec = route.edge.auth
        return AuthFilter(spec, build_verifier(spec, lambda: edge.http)) if spec is not None else None

    def rate_limit_by_identity(route: CompiledRoute) -> Filter | None:
        spec = route.edge.rate_limit
        if spec is None or spec.key not in _BY_IDENTITY:
            return None
        from app.edge.ratelimit import RateLimitFilter

        return RateLimitFilter(route.name, spec, lambda: edge.rate_limits)

    def upstream_credentials(route: CompiledRoute) -> Filter | None:
        spec = route.edge.upstream_auth
        return UpstreamAuthFilter(build_upstream_auth(spec, lambda: edge.http)) if spec is not None else None

    if websocket:
        return [addresses, websocket_origin, rate_limit_by_client, auth, rate_limit_by_identity, upstream_credentials]
    return [
        addresses,
        cors,
        rate_limit_by_client,
        auth,
        rate_limit_by_identity,
        upstream_credentials,
        pools.bulkhead_for,
    ]
