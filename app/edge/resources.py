"""What the edge filters share for the life of the process: an outbound client and the rate-limit storage.

The client (JWKS and OAuth token fetches) comes from ``app.outbound.clients``,
so it keeps no cookies. Both are opened by the lifespan and closed on
shutdown; filters built at start-up reach them through this object, which
belongs to one app.
"""

from __future__ import annotations

import httpx

from app.config.settings import Settings
from app.edge.ratelimit import RateLimitStore
from app.outbound.clients import make_client


class EdgeResources:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._http: httpx.AsyncClient | None = None
        self._store: RateLimitStore | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("the edge is not open (the app's lifespan has not started)")
        return self._http

    @property
    def rate_limits(self) -> RateLimitStore:
        if self._store is None:
            raise RuntimeError("the edge is not open (the app's lifespan has not started)")
        return self._store

    async def open(self) -> None:
        timeout = self._settings.timeout
        self._http = make_client(
            timeout=httpx.Timeout(connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool)
        )
        self._store = RateLimitStore(self._settings)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._store is not None:
            await self._store.aclose()
