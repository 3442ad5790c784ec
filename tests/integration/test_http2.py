"""Routes with ``http2: true`` speak HTTP/2 to a real h2 server (hypercorn)."""

from __future__ import annotations

import hashlib

import anyio
import httpx
import pytest

from tests.gateway import route, run_gateway
from tests.servers import run_hypercorn_h2
from tests.upstreams import make_upstream

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("tls", [False, True], ids=["h2c-prior-knowledge", "h2-tls-alpn"])
async def test_http2_route_talks_http2_to_the_upstream(tls):
    app, _ = make_upstream()
    async with run_hypercorn_h2(app, tls=tls) as up:
        options = {"http2": True}
        if tls:
            options["verify"] = str(up.ca_pem)
        async with run_gateway(route("h2", "/h2", up.url, **options)) as gw, httpx.AsyncClient() as client:
            echo = (await client.get(f"{gw.url}/h2/echo?x=1")).json()
            body = bytes(range(256)) * 4096
            upload = (await client.post(f"{gw.url}/h2/echo", content=body)).json()
            assert gw.connections_in_use() == 0
    assert echo["http_version"] == "2"
    assert echo["raw_path"] == "/echo" and echo["query_string"] == "x=1"
    headers = dict(echo["headers"])
    assert "connection" not in headers and "transfer-encoding" not in headers
    assert upload["body_length"] == len(body)
    assert upload["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_http2_streams_are_relayed_as_they_arrive():
    app, stats = make_upstream()
    async with run_hypercorn_h2(app, tls=False) as up:
        async with run_gateway(route("h2", "/h2", up.url, http2=True)) as gw, httpx.AsyncClient() as client:
            async with client.stream("GET", f"{gw.url}/h2/sse?events=3&delay=0.4") as response:
                lines = response.aiter_lines()
                with anyio.fail_after(5):
                    assert await anext(lines) == "id: 0"
                assert stats.streams_for("/sse")[0].chunks_sent < 3
                rest = [line async for line in lines]
    assert "data: event 2" in rest


async def test_http2_route_to_an_untrusted_certificate_fails_with_502():
    app, _ = make_upstream()
    async with run_hypercorn_h2(app, tls=True) as up:
        async with run_gateway(route("h2", "/h2", up.url, http2=True)) as gw, httpx.AsyncClient() as client:
            response = await client.get(f"{gw.url}/h2/echo")
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"


async def test_http1_route_verifies_tls_with_the_configured_ca():
    app, _ = make_upstream()
    async with run_hypercorn_h2(app, tls=True) as up:
        trusted = route("tls", "/tls", up.url, verify=str(up.ca_pem))
        untrusted = route("bad", "/bad", up.url.replace("127.0.0.1", "localhost"))
        async with run_gateway(trusted, untrusted) as gw, httpx.AsyncClient() as client:
            ok = await client.get(f"{gw.url}/tls/echo")
            refused = await client.get(f"{gw.url}/bad/echo")
    assert ok.status_code == 200 and ok.json()["http_version"] == "1.1"
    assert refused.status_code == 502
