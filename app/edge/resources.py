"""The edge at run time: per-route filters built at start-up, and what they share.

``Edge.filters()`` gives the pipeline its filter factories, outermost first:
CORS (a preflight is answered before anything else), rate limits keyed by
client IP or header (before auth, so unauthenticated floods are limited too),
inbound auth, rate limits keyed by identity, upstream credentials. A route
that sets none of them gets no filter at all.

The shared general-purpose HTTP client (JWKS and OAuth token fetches) and the
rate-limit storage are opened by the lifespan and closed on shutdown; filters
reach them through this object, which belongs to one app.
"""

from __future__ import annotations

import httpx

from app.edge.auth import AuthFilter, build_verifier
from app.edge.cors import CorsFilter
from app.edge.ratelimit import RateLimitFilter, RateLimitStore
from app.edge.upstream_auth import UpstreamAuthFilter, build_upstream_auth
from app.proxy.pipeline import Filter, FilterFactory
from app.proxy.routing import CompiledRoute
from app.settings import Settings

_BY_IDENTITY = ("api_key", "subject")


class Edge:
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
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool),
            follow_redirects=False,
            trust_env=False,
        )
        self._store = RateLimitStore(self._settings)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._store is not None:
            await self._store.aclose()

    def filters(self) -> list[FilterFactory]:
        return [self._cors, self._rate_limit_before_auth, self._auth, self._rate_limit_after_auth, self._upstream_auth]

    def _cors(self, route: CompiledRoute) -> Filter | None:
        spec = route.route.cors
        return CorsFilter(route, spec) if spec is not None else None

    def _auth(self, route: CompiledRoute) -> Filter | None:
        spec = route.route.auth
        if spec is None:
            return None
        return AuthFilter(spec, build_verifier(spec, lambda: self.http))

    def _rate_limit_before_auth(self, route: CompiledRoute) -> Filter | None:
        spec = route.route.rate_limit
        if spec is None or spec.key in _BY_IDENTITY:
            return None
        return RateLimitFilter(route.name, spec, lambda: self.rate_limits)

    def _rate_limit_after_auth(self, route: CompiledRoute) -> Filter | None:
        spec = route.route.rate_limit
        if spec is None or spec.key not in _BY_IDENTITY:
            return None
        return RateLimitFilter(route.name, spec, lambda: self.rate_limits)

    def _upstream_auth(self, route: CompiledRoute) -> Filter | None:
        spec = route.route.upstream_auth
        if spec is None:
            return None
        return UpstreamAuthFilter(build_upstream_auth(spec, lambda: self.http))
