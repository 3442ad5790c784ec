"""The real client behind a trusted proxy: two hops over real sockets.

Clients on 127.0.0.2 and 127.0.0.3 (Linux routes all of 127/8 to loopback)
call a first Gatehouse, the "load balancer" on 127.0.0.1, which proxies to a
second Gatehouse that trusts 127.0.0.1 only. The second one must see each
client's own address for rate limits, ``allow_ips`` and its access log, and
must not believe an X-Forwarded-For a client wrote itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.gateway import RunningGateway, Written, route, run_gateway

pytestmark = pytest.mark.anyio

ALICE, MALLORY = "127.0.0.2", "127.0.0.3"


@contextlib.asynccontextmanager
async def two_hops(upstream_url: str, written: Written) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    async with (
        run_gateway(
            route("limited", "/limited", upstream_url, rate_limit={"limit": "2/minute", "key": "ip"}),
            route("alice-only", "/alice", upstream_url, allow_ips=[f"{ALICE}/32"]),
            route("no-mallory", "/open", upstream_url, deny_ips=[f"{MALLORY}/32"]),
            trusted_proxies=["127.0.0.1/32"],
            access_write=written,
            access_log_flush_interval=0.01,
        ) as inner,
        run_gateway(route("balancer", "/", inner.url)) as outer,
    ):
        yield outer, inner


def client_from(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_rate_limits_allow_ips_and_the_access_log_use_the_client_behind_the_proxy(upstream):
    server, stats = upstream
    written = Written()
    async with (
        two_hops(server.url, written) as (outer, inner),
        client_from(ALICE) as alice,
        client_from(MALLORY) as mallory,
    ):
        alice_limited = [(await alice.get(f"{outer.url}/limited/echo")).status_code for _ in range(3)]
        # Mallory has her own budget, and cannot spend Alice's by claiming to be her.
        spoof = {"X-Forwarded-For": ALICE}
        mallory_limited = [
            (await mallory.get(f"{outer.url}/limited/echo", headers=spoof)).status_code for _ in range(2)
        ]
        alice_only = (await alice.get(f"{outer.url}/alice/echo")).status_code
        mallory_as_alice = await mallory.get(f"{outer.url}/alice/echo", headers=spoof)
        denied = await mallory.get(f"{outer.url}/open/echo")
        # Straight to the inner gateway, Mallory is no trusted proxy: her X-Forwarded-For is ignored.
        direct = await mallory.get(f"{inner.url}/alice/echo", headers=spoof)
    assert alice_limited == [200, 200, 429]
    assert mallory_limited == [200, 200]
    assert alice_only == 200
    assert mallory_as_alice.status_code == 403
    assert mallory_as_alice.headers["content-type"] == "application/problem+json"
    assert denied.status_code == 403 and direct.status_code == 403
    assert stats.requests["/echo"] == 5  # 2 + 2 limited, 1 alice-only: nothing refused got through
    clients = [(line["route"], line["status"], line["client"]) for line in written.json()]
    assert clients[:3] == [("limited", 200, ALICE), ("limited", 200, ALICE), ("limited", 429, ALICE)]
    assert ("alice-only", 403, MALLORY) in clients
    assert clients[-1][0:2] == ("alice-only", 403) and clients[-1][2].startswith(MALLORY + ":")
