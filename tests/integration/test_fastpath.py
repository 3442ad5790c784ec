"""The proxy's fast paths keep what they replace: no response left for the cyclic GC, bytes unchanged."""

from __future__ import annotations

import gc

import aiohttp
import anyio
import httpx
import pytest

from app.outbound.clients import make_client
from app.outbound.fastpath import release
from app.outbound.transport import AiohttpTransport
from tests.gateway import route, run_gateway
from tests.upstreams import large_body

pytestmark = pytest.mark.anyio


def gateway_garbage(upstream_port: int) -> list[object]:
    """Objects of the gateway's upstream exchanges that only the cyclic collector could free."""
    found = []
    for obj in gc.garbage:
        if isinstance(obj, (aiohttp.ClientResponse, aiohttp.ClientRequest)):
            found.append(obj)
        elif isinstance(obj, httpx.Response) and obj.request.url.port == upstream_port:
            found.append(obj)
    return found


async def test_proxied_exchanges_are_freed_by_reference_counting(upstream):
    server, _ = upstream
    async with run_gateway(route("a", "/a", server.url, retries={"attempts": 2})) as gw:
        async with httpx.AsyncClient() as client:
            for _ in range(5):  # warm: pools, lazily built objects
                await client.get(f"{gw.url}/a/echo/")
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.disable()
            try:
                for _ in range(20):
                    release(await client.get(f"{gw.url}/a/echo/x?y=1"))
                release(await client.post(f"{gw.url}/a/echo/", content=b"x" * 10_000))
                release(await client.get(f"{gw.url}/a/stream?chunks=3&delay=0"))
                gc.collect()
                leftovers = gateway_garbage(server.port)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
    assert leftovers == []


async def test_headers_and_target_reach_the_upstream_byte_for_byte(upstream):
    server, _ = upstream
    async with run_gateway(route("a", "/a", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.post(
            f"{gw.url}/a/echo/p%7Cq?sig=a%2Fb&x",
            headers=[("X-Mixed", "One"), ("set-cookie", "a=1"), ("set-cookie", "b=2")],
        )
        empty_put = await client.put(f"{gw.url}/a/echo/")
    seen = response.json()
    assert seen["method"] == "POST" and seen["raw_path"] == "/echo/p%7Cq" and seen["query_string"] == "sig=a%2Fb&x"
    headers = [tuple(h) for h in seen["headers"]]
    assert ("x-mixed", "One") in headers
    assert [v for k, v in headers if k == "set-cookie"] == ["a=1", "b=2"]
    # httpx's own rule for a body-less PUT, kept by the fast request builder.
    assert ("content-length", "0") in [tuple(h) for h in empty_put.json()["headers"]]


async def test_the_aiohttp_transport_hands_httpx_the_response_fields_as_received(upstream):
    server, _ = upstream
    transport = AiohttpTransport(limits=httpx.Limits())
    async with make_client(timeout=httpx.Timeout(5), transport=transport) as client:
        response = await client.get(f"{server.url}/headers")
        mine = response.headers.raw
        await response.aclose()
    # The same fields, in the same order, as httpx's own parsing of the same exchange.
    async with httpx.AsyncClient() as plain:
        theirs = (await plain.get(f"{server.url}/headers")).headers.raw
    assert [name.lower() for name, _ in mine] == [name for name, _ in theirs]
    # uvicorn's own Date may tick between the two exchanges; every other field is identical.
    assert [f for f in mine if f[0].lower() != b"date"] == [f for f in theirs if f[0] != b"date"]
    assert response.headers.get_list("Server") == [v.decode() for n, v in theirs if n == b"server"]
    assert response.headers["CONTENT-LENGTH"] == "2"
    assert transport.in_use == 0


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/large?bytes=3000000", large_body(3_000_000)),  # Content-Length: read piece by piece
        ("/stream?chunks=5&delay=0", b"".join(f"chunk {i}\n".encode() for i in range(5))),  # chunked
        ("/large?bytes=0", b""),
    ],
    ids=["content-length", "chunked", "empty"],
)
async def test_the_aiohttp_transport_body_is_the_upstreams_bytes(upstream, path, expected):
    server, _ = upstream
    transport = AiohttpTransport(limits=httpx.Limits())
    async with make_client(timeout=httpx.Timeout(5), transport=transport) as client:
        async with client.stream("GET", f"{server.url}{path}") as response:
            chunks = [chunk async for chunk in response.aiter_raw()]
        head = await client.head(f"{server.url}/large?bytes=100")
    assert b"".join(chunks) == expected
    assert all(chunks)  # no empty chunk is handed on
    assert head.content == b"" and head.headers["content-length"] == "100"
    assert transport.in_use == 0


async def test_the_aiohttp_transport_keeps_at_most_max_keepalive_connections_idle(upstream):
    """httpx's ``Limits.max_keepalive_connections`` holds on the aiohttp transport as on httpcore's."""
    server, stats = upstream
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=10, max_keepalive_connections=2))
    async with make_client(timeout=httpx.Timeout(5), transport=transport) as client:
        async with anyio.create_task_group() as tasks:
            for _ in range(8):  # overlapping, so eight connections are opened
                tasks.start_soon(client.get, f"{server.url}/sleep?seconds=0.3")
        assert stats.requests["/sleep"] == 8
        # The upstream's own count of open connections: the pool closed all but two.
        await stats.wait_for(lambda: len(server.server.server_state.connections) == 2)
        assert transport.in_use == 0
        response = await client.get(f"{server.url}/echo/")  # an idle one is reused
        assert response.status_code == 200
        assert len(server.server.server_state.connections) == 2


async def test_a_fully_read_body_hands_its_connection_back_and_a_cut_one_closes_it(upstream):
    """Whichever way a body ends (length, chunked, empty), the next request reuses the connection."""
    server, stats = upstream
    transport = AiohttpTransport(limits=httpx.Limits())
    seen: set[object] = set()  # the upstream's connection objects (held, so none is mistaken for another)
    async with make_client(timeout=httpx.Timeout(5), transport=transport) as client:
        for path in ("/echo/", "/large?bytes=100000", "/large?bytes=0", "/stream?chunks=3&delay=0", "/echo/"):
            async with client.stream("GET", f"{server.url}{path}") as response:
                async for _ in response.aiter_raw():
                    pass
            assert transport.in_use == 0
            seen.update(server.server.server_state.connections)
            assert len(seen) == 1, path
        async with client.stream("GET", f"{server.url}/large?bytes=1000000") as response:
            async for _ in response.aiter_raw():
                break  # the rest is never read: the connection cannot be reused
        assert transport.in_use == 0
        await stats.wait_for(lambda: len(server.server.server_state.connections) == 0)
