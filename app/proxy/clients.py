"""The upstream clients: one ``httpx.AsyncClient`` per upstream origin (per target), from ``make_client``.

One client per origin rather than one for everything: each upstream gets its
own connection pool (``limits`` apply per upstream), so a slow upstream that
holds every connection it may have cannot starve the others, and each origin
gets the transport it needs (aiohttp for HTTP/1.1, httpcore for HTTP/2). They
are created in the lifespan and closed on shutdown.

No client keeps cookies (see ``app.outbound.clients``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from app.config.routes import PoolLimits
from app.outbound.clients import make_client, ssl_context
from app.outbound.transport import AiohttpTransport
from app.proxy.routing import CompiledRoute


@dataclass(frozen=True, slots=True)
class ClientKey:
    origin: str
    http2: bool
    verify: bool | Path
    client_cert: tuple[Path, Path] | None = None


class UpstreamClients:
    """Owns the upstream clients; ``for_route`` is a dict lookup."""

    def __init__(
        self,
        routes: tuple[CompiledRoute, ...],
        limits: PoolLimits,
        *,
        http1: Literal["aiohttp", "httpcore"] = "aiohttp",
    ) -> None:
        self._http1 = http1
        self._limits = httpx.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )
        self._clients: dict[ClientKey, httpx.AsyncClient] = {}
        self._transports: dict[ClientKey, httpx.AsyncBaseTransport] = {}
        self._by_route: dict[str, httpx.AsyncClient] = {}
        self._by_target: dict[tuple[str, int], httpx.AsyncClient] = {}
        # One TLS context per TLS setting, not per origin: each loads the CA bundle (~0.9 MiB of RSS
        # for certifi's). Neither transport changes a context after building it; httpcore sets the
        # same ALPN on every HTTP/1.1 one, and HTTP/2 contexts are kept apart. Per generation, so a
        # reload re-reads CA bundles and client certificates.
        self._tls: dict[tuple[bool | Path, bool, tuple[Path, Path] | None], ssl.SSLContext] = {}
        for route in routes:
            for index, target in enumerate(route.targets):
                key = ClientKey(target.origin, route.http2, route.verify, route.client_cert)
                self._by_target[route.name, index] = self._client(key, target.scheme, route)
            self._by_route[route.name] = self._by_target[route.name, 0]
        self.closed = False

    def _client(self, key: ClientKey, scheme: str, route: CompiledRoute) -> httpx.AsyncClient:
        client = self._clients.get(key)
        if client is None:
            transport = self._transports[key] = self._transport(key, scheme)
            client = self._clients[key] = make_client(
                transport=transport,
                timeout=httpx.Timeout(
                    connect=route.timeouts.connect,
                    read=route.timeouts.read,
                    write=route.timeouts.write,
                    pool=route.timeouts.pool,
                ),
            )
        return client

    def _transport(self, key: ClientKey, scheme: str) -> httpx.AsyncBaseTransport:
        https = scheme == "https"
        if key.http2:
            from app.outbound.http2 import HTTP2Transport  # here: h2 and hpack only for HTTP/2 routes

            # h2 over TLS is negotiated by ALPN; cleartext h2c uses prior knowledge.
            return HTTP2Transport(
                https=https,
                ssl_context=self._ssl_context(key) if https else None,
                limits=self._limits,
            )
        context = self._ssl_context(key) if https else None
        if self._http1 == "httpcore":
            return httpx.AsyncHTTPTransport(limits=self._limits, verify=context or True, trust_env=False)
        return AiohttpTransport(limits=self._limits, ssl_context=context)

    def _ssl_context(self, key: ClientKey) -> ssl.SSLContext:
        setting = (key.verify, key.http2, key.client_cert)
        context = self._tls.get(setting)
        if context is None:
            context = self._tls[setting] = ssl_context(key.verify, http2=key.http2, client_cert=key.client_cert)
        return context

    def for_route(self, route_name: str) -> httpx.AsyncClient:
        return self._by_route[route_name]

    def for_target(self, route_name: str, index: int) -> httpx.AsyncClient:
        return self._by_target[route_name, index]

    def in_use(self) -> dict[str, int]:
        """Connections held by open exchanges, per upstream origin (leak check)."""
        counts: dict[str, int] = {}
        for key, transport in self._transports.items():
            if isinstance(transport, AiohttpTransport):
                held = transport.in_use
            else:
                pool = transport._pool  # type: ignore[attr-defined]
                held = len(pool._requests)
            name = f"{key.origin} (h2)" if key.http2 else key.origin
            counts[name] = counts.get(name, 0) + held
        return counts

    async def aclose(self) -> None:
        self.closed = True
        for client in self._clients.values():
            await client.aclose()
