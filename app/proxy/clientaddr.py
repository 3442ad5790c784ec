"""The client's address, behind any number of trusted proxies (pure).

A request that comes straight from a client has the socket peer as its client.
When the peer is in ``trusted_proxies`` (a load balancer), each proxy in the
chain appended the address it saw to ``X-Forwarded-For``; walking that list
from the right, past every trusted hop, the first untrusted address is the
client. Anything to its left was written by the client itself and is never
believed. Without ``X-Forwarded-For``, the ``for=`` parameters of
``Forwarded`` (RFC 7239) are read the same way.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from app.config.routes import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> IPAddress | None:
    """An address from a socket peer or a forwarding header (``[v6]:port``, ``v4:port`` allowed)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def is_trusted(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    parsed = parse_address(address)
    return parsed is not None and any(parsed in network for network in networks)


def client_address(peer: str, headers: Iterable[tuple[bytes, bytes]], trusted: tuple[IPNetwork, ...]) -> str:
    """The client: ``peer`` itself, or the right-most untrusted hop when ``peer`` is a trusted proxy."""
    if not trusted or not is_trusted(peer, trusted):
        return peer
    xff: list[bytes] = []
    forwarded: list[bytes] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            xff.append(value)
        elif name == b"forwarded":
            forwarded.append(value)
    hops = _xff_hops(xff) if xff else _forwarded_hops(forwarded)
    client = peer
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            break  # an unreadable hop: go no further than the last proxy that wrote one we can read
        client = str(address)
        if not any(address in network for network in trusted):
            break
    return client


def _xff_hops(values: list[bytes]) -> list[str]:
    return [hop.strip() for value in values for hop in value.decode("latin-1").split(",")]


def _forwarded_hops(values: list[bytes]) -> list[str]:
    hops = []
    for value in values:
        for element in value.decode("latin-1").split(","):
            for pair in element.split(";"):
                key, _, found = pair.partition("=")
                if key.strip().lower() == "for":
                    hops.append(found.strip())
    return hops
