"""Lifespan: what lives as long as the process, handed to requests as state."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypedDict

from app.edge.runtime import Edge
from app.proxy.clients import UpstreamClients
from app.proxy.routing import RouteTable
from app.resilience.checks import HealthChecks
from app.resilience.drain import Drain
from app.resilience.upstreams import Upstreams
from app.settings import Settings
from app.webhooks.runtime import Webhooks, open_webhooks

log = logging.getLogger("gatehouse")


class State(TypedDict):
    """Lifespan state; requests reach it as ``scope["state"]`` / ``request.state``."""

    settings: Settings
    routes: RouteTable
    clients: UpstreamClients
    upstreams: Upstreams
    drain: Drain
    edge: Edge  # the shared client for JWKS / OAuth token fetches, and the rate-limit storage
    webhooks: Webhooks | None  # the delivery store and dispatcher; None without webhook endpoints


def make_lifespan(
    settings: Settings, routes: RouteTable, edge: Edge, upstreams: Upstreams, drain: Drain
) -> Callable[[Any], AbstractAsyncContextManager[State]]:
    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[State]:
        clients = UpstreamClients(routes.routes, settings.limits, http1=settings.upstream_transport)
        upstreams.bind(clients)
        checks = HealthChecks(upstreams)
        await edge.open()
        checks.start()
        background = AsyncExitStack()
        try:
            webhooks = await background.enter_async_context(open_webhooks(settings))
        except BaseException:
            await checks.stop()
            await clients.aclose()
            await edge.aclose()
            raise
        log.info("gatehouse ready: %d route(s)", len(routes.routes))
        try:
            yield {
                "settings": settings,
                "routes": routes,
                "clients": clients,
                "upstreams": upstreams,
                "drain": drain,
                "edge": edge,
                "webhooks": webhooks,
            }
        finally:
            # uvicorn has stopped accepting and waited for in-flight exchanges (up to shutdown_grace).
            drain.start("lifespan shutdown")
            await background.aclose()  # the dispatcher hands back what it holds, then the store closes
            await checks.stop()
            await clients.aclose()
            await edge.aclose()
            log.info("gatehouse stopped: upstream clients closed")

    return lifespan
