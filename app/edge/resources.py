"""What the edge filters share for the life of the process: an outbound client and the rate-limit storage.

The client (JWKS and OAuth token fetches) comes from ``app.outbound.clients``,
so it keeps no cookies. Both are opened by the lifespan and closed on
shutdown; filters built at start-up reach them through this object, which
belongs to one app.

Each is built at start-up only if the configuration uses it (a Redis URL, a
rate limit; inbound or upstream auth), otherwise on first use (a reload can add
a route that needs it): the client loads httpcore and h2, the storage
``limits``, about 3 MiB RSS that a gateway with neither does not pay. What is
built at start-up still fails start-up, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from app.config.settings import Settings
from app.outbound.clients import make_client

if TYPE_CHECKING:
    from app.edge.ratelimit import RateLimitStore

NOT_OPEN = "the edge is not open (the app's lifespan has not started, or has ended)"


class EdgeResources:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._http: httpx.AsyncClient | None = None
        self._store: RateLimitStore | None = None
        self._open = False

    @property
    def http(self) -> httpx.AsyncClient:
        if not self._open:
            raise RuntimeError(NOT_OPEN)
        if self._http is None:
            self._http = self._new_client()
        return self._http

    @property
    def rate_limits(self) -> RateLimitStore:
        if not self._open:
            raise RuntimeError(NOT_OPEN)
        if self._store is None:
            self._store = self._new_store()
        return self._store

    async def open(self) -> None:
        self._open = True
        settings, routes = self._settings, self._settings.routes
        if settings.redis_url is not None or settings.rate_limit or any(route.rate_limit for route in routes):
            self._store = self._new_store()
        if settings.auth or any(route.auth or route.upstream_auth for route in routes):
            self._http = self._new_client()

    async def aclose(self) -> None:
        self._open = False
        http, store, self._http, self._store = self._http, self._store, None, None
        if http is not None:
            await http.aclose()
        if store is not None:
            await store.aclose()

    def _new_client(self) -> httpx.AsyncClient:
        timeout = self._settings.timeout
        return make_client(
            timeout=httpx.Timeout(connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool)
        )

    def _new_store(self) -> RateLimitStore:
        from app.edge.ratelimit import RateLimitStore

        return RateLimitStore(self._settings)
