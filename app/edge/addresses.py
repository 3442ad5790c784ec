"""The ``allow_ips`` / ``deny_ips`` filter: which client addresses may use a route.

The address is the exchange's ``client_ip``: the real client behind any
trusted proxies (``app.proxy.clientaddr``), never a socket peer that is a load
balancer. ``deny_ips`` wins over ``allow_ips``; with ``allow_ips`` set, an
address outside it is refused too. Refusals are 403.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from app.config.routes import IPNetwork
from app.errors import Forbidden
from app.proxy.clientaddr import parse_address
from app.proxy.exchange import Exchange, Handler


class AddressFilter:
    def __init__(self, allow: Sequence[IPNetwork] | None, deny: Sequence[IPNetwork]) -> None:
        self._allow = tuple(allow) if allow is not None else None
        self._deny = tuple(deny)

    def permits(self, client_ip: str) -> bool:
        address = parse_address(client_ip)
        if address is None:
            return False
        if any(address in network for network in self._deny):
            return False
        return self._allow is None or any(address in network for network in self._allow)

    async def __call__(self, exchange: Exchange, call_next: Handler) -> httpx.Response:
        if not self.permits(exchange.client_ip):
            raise Forbidden("The client's address may not use this route.")
        return await call_next(exchange)
