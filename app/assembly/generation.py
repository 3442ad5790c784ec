"""A generation: one version of the route table and everything built from it.

The gateway serves from exactly one ``Generation`` at a time and reads it
once per request, so a request runs start to finish on the generation it
began on. A config reload builds the next generation completely (route table,
resilience pools, filter chains, upstream clients, health checks), then swaps
the gateway's one reference to it; the old generation is closed once the
requests it is still serving have finished.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import httpx

from app.assembly.filters import route_filters
from app.config.routes import PoolLimits
from app.config.settings import Settings
from app.edge.resources import EdgeResources
from app.observability.metrics import Metrics, RouteMetrics
from app.proxy.clients import UpstreamClients
from app.proxy.exchange import Exchange, Handler, chain_for
from app.proxy.routing import RouteTable
from app.resilience.checks import HealthChecks
from app.resilience.pools import RoutePools

log = logging.getLogger("gatehouse")


async def handshake_passed(exchange: Exchange) -> httpx.Response:  # noqa: ARG001 # a Handler's signature
    """The end of a WebSocket handshake's filter chain: every filter let it through."""
    return httpx.Response(101)


class Generation:
    def __init__(self, routes: RouteTable, edge: EdgeResources, metrics: Metrics, number: int = 1) -> None:
        self.number = number
        self.routes = routes
        self.pools = pools = RoutePools(routes)
        factories = route_filters(edge, pools)
        self.handlers: dict[str, Handler] = {
            route.name: chain_for(route, factories, pools.endpoint_for(route)) for route in routes.routes
        }
        # WebSocket handshakes run the route's filters (``websocket=True``) up to ``handshake_passed``.
        ws_factories = route_filters(edge, pools, websocket=True)
        ws_routes = [route for route in routes.routes if route.resilience.websocket is not None]
        self.websocket_handlers: dict[str, Handler] = {
            route.name: chain_for(route, ws_factories, handshake_passed) for route in ws_routes
        }
        self.websocket_metrics = {route.name: metrics.for_websocket(route.name) for route in ws_routes}
        self.origins = {route.name: httpx.URL(route.upstream.origin) for route in routes.routes}
        self.metrics: dict[str, RouteMetrics] = {route.name: metrics.for_route(route.name) for route in routes.routes}
        self.clients: UpstreamClients | None = None
        self.in_flight = 0
        self._checks: HealthChecks | None = None
        self._idle: asyncio.Event | None = None

    @classmethod
    def from_settings(cls, settings: Settings, edge: EdgeResources, metrics: Metrics, number: int = 1) -> Generation:
        """Build (but do not open) a generation for ``settings``' routes."""
        return cls(RouteTable.from_settings(settings), edge, metrics, number)

    def open(self, limits: PoolLimits, http1: Literal["aiohttp", "httpcore"]) -> None:
        """Create the upstream clients and start the health checks (in the event loop)."""
        self.clients = UpstreamClients(self.routes.routes, limits, http1=http1)
        self.pools.bind(self.clients)
        self._checks = HealthChecks(self.pools)
        self._checks.start()

    def finished_one(self) -> None:
        """A request on this generation ended (called by the gateway)."""
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def close(self, grace: float) -> None:
        """Stop checks, wait up to ``grace`` seconds for in-flight requests, close the clients."""
        if self._checks is not None:
            await self._checks.stop()
        if self.in_flight and grace > 0:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                log.warning(
                    "generation %d: %d request(s) still running after %.0fs; closing its clients",
                    self.number,
                    self.in_flight,
                    grace,
                )
        if self.clients is not None:
            await self.clients.aclose()
