"""max_concurrent per route: over it, wait up to the pool timeout, then 503."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from tests.gateway import route, run_gateway

pytestmark = pytest.mark.anyio


async def test_over_max_concurrent_waits_the_pool_timeout_then_gets_503(upstream):
    server, stats = upstream
    options = {"max_concurrent": 1, "timeout": {"pool": 0.3}}
    routes = (route("slow", "/slow", server.url, **options), route("other", "/other", server.url))
    async with run_gateway(*routes) as gw, httpx.AsyncClient() as client:
        async with client.stream("GET", f"{gw.url}/slow/stream", params={"chunks": 2, "delay": 1.0}) as held:
            await stats.wait_for(lambda: len(stats.streams) == 1)
            started = time.monotonic()
            refused = await client.get(f"{gw.url}/slow/echo")
            waited = time.monotonic() - started
            assert refused.status_code == 503
            assert refused.json()["type"] == "urn:gatehouse:problem:route-overloaded"
            assert refused.headers["retry-after"] == "1"
            assert 0.25 <= waited < 0.9  # the pool timeout, not the stream's second
            assert (await client.get(f"{gw.url}/other/echo")).status_code == 200  # other routes unaffected
            assert gw.upstreams()["slow"]["concurrent"] == 1
            await held.aread()
        assert (await client.get(f"{gw.url}/slow/echo")).status_code == 200
        assert gw.upstreams()["slow"]["concurrent"] == 0
        assert stats.requests["/echo"] == 2


async def test_a_waiting_request_gets_the_slot_when_it_frees_in_time(upstream):
    server, _ = upstream
    options = {"max_concurrent": 1, "timeout": {"pool": 3}}
    async with run_gateway(route("slow", "/slow", server.url, **options)) as gw, httpx.AsyncClient() as client:
        statuses = []

        async def get(path):
            statuses.append((await client.get(f"{gw.url}/slow{path}")).status_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(get, "/sleep?seconds=0.3")
            await anyio.sleep(0.1)
            tg.start_soon(get, "/echo")
        assert statuses == [200, 200]
        assert gw.upstreams()["slow"]["concurrent"] == 0
