"""Who reads the ops endpoints: a token on the public port, or the separate ``ops_listen`` listener."""

from __future__ import annotations

import asyncio
import socket

import anyio
import httpx
import pytest

from app.config.server import OpsListen
from app.serving.ops_listener import serve_ops
from tests.gateway import OPS_TOKEN, bearer, route, run_gateway
from tests.servers import LOOPBACK

pytestmark = pytest.mark.anyio

DATA = ("/routes", "/upstreams", "/stats", "/metrics")
METRICS_TOKEN = "metrics-token-for-tests-0123456"


async def get_all(client: httpx.AsyncClient, base: str, paths, **kwargs) -> dict[str, httpx.Response]:
    return {path: await client.get(f"{base}/_gatehouse{path}", **kwargs) for path in paths}


async def test_without_a_token_the_public_port_refuses_ops_data_but_serves_health(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        refused = await get_all(client, gw.url, DATA)
        open_ = await get_all(client, gw.url, ("/healthz", "/readyz", "/"))
    for path, response in refused.items():
        assert response.status_code == 403, path
        assert response.headers["content-type"] == "application/problem+json"
        assert "ops_listen" in response.json()["detail"] and "admin_token" in response.json()["detail"]
        assert server.url not in response.text
    assert {path: r.status_code for path, r in open_.items()} == {"/healthz": 200, "/readyz": 200, "/": 200}
    assert server.url not in open_["/"].text  # the page is static: its data comes from the refused endpoints
    assert sum(stats.requests.values()) == 0


async def test_with_an_admin_token_the_public_port_serves_ops_data_to_its_bearer_only(upstream):
    server, _ = upstream
    async with (
        run_gateway(route("up", "/up", server.url), admin_token=OPS_TOKEN) as gw,
        httpx.AsyncClient() as client,
    ):
        anonymous = await get_all(client, gw.url, DATA)
        wrong = await get_all(client, gw.url, DATA, headers=bearer("x" * 32))
        basic = await get_all(client, gw.url, DATA, headers={"authorization": f"Basic {OPS_TOKEN}"})
        right = await get_all(client, gw.url, DATA, headers=bearer())
    for responses in (anonymous, wrong, basic):
        for path, response in responses.items():
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            assert server.url not in response.text
    assert {path: r.status_code for path, r in right.items()} == dict.fromkeys(DATA, 200)
    assert right["/routes"].json()["routes"][0]["upstream"] == server.url


async def test_metrics_token_reads_metrics_and_nothing_else(upstream):
    server, _ = upstream
    async with (
        run_gateway(route("up", "/up", server.url), metrics_token=METRICS_TOKEN) as gw,
        httpx.AsyncClient() as client,
    ):
        scraped = await client.get(f"{gw.url}/_gatehouse/metrics", headers=bearer(METRICS_TOKEN))
        others = await get_all(client, gw.url, ("/routes", "/upstreams", "/stats"), headers=bearer(METRICS_TOKEN))
    assert scraped.status_code == 200 and "gatehouse_requests_in_flight" in scraped.text
    assert {path: r.status_code for path, r in others.items()} == dict.fromkeys(others, 403)  # no admin_token


async def test_ops_listen_serves_ops_without_a_token_and_the_public_port_only_health(upstream):
    server, stats = upstream
    async with (
        run_gateway(route("up", "/up", server.url), ops_listen=f"{LOOPBACK}:0") as gw,
        httpx.AsyncClient() as client,
    ):
        assert gw.ops_url != gw.url
        on_ops = await get_all(client, gw.ops_url, (*DATA, "/healthz", "/readyz", "/"))
        on_public = await get_all(client, gw.url, (*DATA, "/"))
        public_health = await get_all(client, gw.url, ("/healthz", "/readyz"))
        proxied_on_ops = await client.get(f"{gw.ops_url}/up/echo/x")
        reload_on_ops = await client.post(f"{gw.ops_url}/_gatehouse/reload")
        proxied = await client.get(f"{gw.url}/up/echo/x")
    assert {path: r.status_code for path, r in on_ops.items()} == dict.fromkeys(on_ops, 200)
    assert on_ops["/routes"].json()["routes"][0]["upstream"] == server.url
    assert {path: r.status_code for path, r in on_public.items()} == dict.fromkeys(on_public, 404)
    assert all(server.url not in r.text for r in on_public.values())
    assert {path: r.status_code for path, r in public_health.items()} == {"/healthz": 200, "/readyz": 200}
    # The ops listener serves nothing else, and admin actions still need the admin token there.
    assert proxied_on_ops.status_code == 404
    assert proxied_on_ops.headers["content-type"] == "application/problem+json"
    assert reload_on_ops.status_code == 403
    assert proxied.status_code == 200
    assert stats.requests["/echo/x"] == 1  # only the request on the public port reached the upstream


async def test_the_ops_listener_bounds_slow_clients_too():
    async with run_gateway(ops_listen=f"{LOOPBACK}:0", server={"header_timeout": 0.5}) as gw:
        host, port = gw.state["ops_address"]
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET /_gatehouse/healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            with anyio.fail_after(5):
                answer = await reader.read()  # to the close
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_an_ops_listen_address_in_use_fails_naming_the_setting():
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        listen = OpsListen(LOOPBACK, taken.getsockname()[1])
        with pytest.raises(OSError, match=rf"ops_listen {LOOPBACK}:{listen.port}: "):
            async with serve_ops(None, {}, listen):
                pass
