"""The ``upstream_auth`` filter: the credentials Gatehouse presents to a route's upstream.

The ``httpx.Auth`` itself is built once per route (``app.outbound.auth``) and
applied by ``send_upstream`` through ``client.send(..., auth=)``.
"""

from __future__ import annotations

import httpx

from app.proxy.exchange import Exchange, Handler


class UpstreamAuthFilter:
    def __init__(self, auth: httpx.Auth) -> None:
        self.auth = auth

    async def __call__(self, exchange: Exchange, call_next: Handler) -> httpx.Response:
        exchange.upstream_auth = self.auth
        return await call_next(exchange)
