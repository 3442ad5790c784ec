"""The proxy's fast paths keep what they replace: no response left for the cyclic GC, bytes unchanged."""

from __future__ import annotations

import asyncio
import gc

import aiohttp
import anyio
import httpx
import pytest
import yarl

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


async def test_the_gateway_builds_no_httpx_auth_flow_per_request(upstream, monkeypatch):
    """With no credentials anywhere, a forwarded request runs no ``httpx.Auth.async_auth_flow`` generator."""
    flows = []
    plain = httpx.Auth.async_auth_flow

    def counted(self, request):
        flows.append(request.url.port)  # the test's own client runs one too, to the gateway
        return plain(self, request)

    monkeypatch.setattr(httpx.Auth, "async_auth_flow", counted)
    server, _ = upstream
    async with run_gateway(route("a", "/a", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/a/echo/")
    assert response.status_code == 200
    assert server.port not in flows and flows


class RawUpstream:
    """A loopback server that records each request's bytes up to its body's end and answers 204."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the client closed the connection
                writer.close()
                return
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            self.requests.append(head + await reader.readexactly(length))
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()


async def _wire(
    requests: list[tuple[str, list[tuple[str, str]], bytes | None]], *, together: bool = False
) -> tuple[int, list[bytes]]:
    upstream = RawUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AiohttpTransport(limits=httpx.Limits())

    async def send(client, method, headers, body):
        request = httpx.Request(method, f"http://127.0.0.1:{port}/p%7Cq?s=a%2Fb&x", headers=headers, content=body)
        response = await client.send(request)
        assert response.status_code == 204

    try:
        async with make_client(timeout=httpx.Timeout(5), transport=transport) as client:
            if together:
                await asyncio.gather(*(send(client, *r) for r in requests))
            else:
                for r in requests:
                    await send(client, *r)
    finally:
        server.close()
    assert transport.in_use == 0
    assert transport._handoff.fields is None  # every request's fields were taken
    return port, upstream.requests


async def test_the_aiohttp_transport_sends_the_fields_it_is_given_in_their_order_and_case():
    """Nothing added (no User-Agent, Accept, Accept-Encoding, Content-Type), nothing merged or moved: Host
    goes where the request has it, repeated fields stay apart (aiohttp's session merged a repeated name
    spelt in another case into one field); the body goes as it is."""
    port, seen = await _wire(
        [
            ("GET", [("X-Mixed", "One"), ("Host", "other.test"), ("set-cookie", "a=1"), ("Set-Cookie", "b=2")], None),
            ("POST", [("x-a", "1")], b'{"k": 1}'),
        ]
    )
    assert seen == [
        b"GET /p%7Cq?s=a%2Fb&x HTTP/1.1\r\n"
        b"X-Mixed: One\r\nHost: other.test\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        b"POST /p%7Cq?s=a%2Fb&x HTTP/1.1\r\n"
        b"Host: 127.0.0.1:" + str(port).encode() + b"\r\nx-a: 1\r\nContent-Length: 8\r\n\r\n" + b'{"k": 1}',
    ]


async def test_the_aiohttp_transport_keeps_aiohttps_host_rule_for_several_host_fields():
    """More than one Host: aiohttp's own rule, the last one given, sent first (the transport adds no other)."""
    _, seen = await _wire([("GET", [("x-a", "1"), ("Host", "one.test"), ("Host", "two.test")], None)])
    assert seen == [b"GET /p%7Cq?s=a%2Fb&x HTTP/1.1\r\nHost: two.test\r\nx-a: 1\r\n\r\n"]


async def test_concurrent_requests_to_one_url_each_send_their_own_fields():
    """The fields reach aiohttp by a handoff (``_ForwardedRequest``): requests in flight together never mix them."""
    port, seen = await _wire([("GET", [("x-n", str(n)), ("x-m", str(n))], None) for n in range(20)], together=True)
    head = b"GET /p%%7Cq?s=a%%2Fb&x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-n: %d\r\nx-m: %d\r\n\r\n"
    assert sorted(seen) == sorted(head % (port, n, n) for n in range(20))


async def test_the_aiohttp_transport_keeps_no_fields_of_a_request_that_failed():
    transport = AiohttpTransport(limits=httpx.Limits())
    listener = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    async with make_client(timeout=httpx.Timeout(5), transport=transport) as client:
        with pytest.raises(httpx.ConnectError):  # after aiohttp built its request
            await client.send(httpx.Request("GET", f"http://127.0.0.1:{port}/", headers=[("x-a", "1")]))
        with pytest.raises(ValueError, match="non-token"):  # while aiohttp builds it, before it takes the fields
            await client.send(httpx.Request("GE\x01T", f"http://127.0.0.1:{port}/"))
    assert transport._handoff.fields is None and transport.in_use == 0


async def test_the_aiohttp_transport_never_resends_a_request_the_upstream_dropped():
    """aiohttp resends an idempotent request once when a reused connection is dropped, rebuilding it
    without the fields handed off; retries are the gateway's (its policy and budget), so it must not."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                seen.append(head)
                if answered == 1 and len(seen) == 2:  # the second request on the first connection: drop it
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                answered += 1
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AiohttpTransport(limits=httpx.Limits())
    try:
        async with make_client(timeout=httpx.Timeout(5), transport=transport) as client:
            first = await client.get(f"http://127.0.0.1:{port}/one", headers={"x-a": "1"})
            assert first.status_code == 200 and first.content == b"ok"
            with pytest.raises(httpx.TransportError):
                await client.get(f"http://127.0.0.1:{port}/two", headers={"x-a": "2"})
            await asyncio.sleep(0.2)  # a resend would reach the upstream by now
    finally:
        server.close()
    assert [head.split(b"\r\n", 1)[0] for head in seen] == [b"GET /one HTTP/1.1", b"GET /two HTTP/1.1"]
    assert all(b"x-a: " in head for head in seen)
    assert transport._handoff.fields is None and transport.in_use == 0


async def test_a_request_built_without_handed_off_fields_is_refused():
    """Should aiohttp ever build a request twice (a resend), the second must not go out without the fields."""
    transport = AiohttpTransport(limits=httpx.Limits())
    with pytest.raises(RuntimeError, match="no forwarded fields"):
        transport._request_class("GET", yarl.URL("http://127.0.0.1:9/"), loop=asyncio.get_running_loop())
