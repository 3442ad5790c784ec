"""Bodies stream both ways, byte for byte, and every upstream response is closed."""

from __future__ import annotations

import hashlib

import anyio
import httpx
import pytest

from app.config.settings import Settings
from app.main import create_app
from tests.gateway import route, run_gateway
from tests.servers import run_uvicorn
from tests.upstreams import GZIP_BODY, large_body

pytestmark = pytest.mark.anyio


async def test_gzip_body_passes_through_unchanged(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        async with client.stream("GET", f"{gw.url}/up/gzip", headers={"accept-encoding": "gzip"}) as response:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(GZIP_BODY))
    assert raw == GZIP_BODY


async def test_large_response_arrives_byte_for_byte(upstream):
    server, _ = upstream
    size = 3 * 1024 * 1024 + 17
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/large", params={"bytes": size})
    assert response.status_code == 200
    assert response.headers["content-length"] == str(size)
    assert response.content == large_body(size)


async def test_a_body_of_known_length_ends_with_its_last_piece(upstream):
    # No empty message after the last byte of a Content-Length body: one ASGI send less per response.
    server, _ = upstream
    size = 3 * 1024 * 1024 + 17
    app = create_app(Settings(routes=[route("up", "/up", server.url)]), access_write=lambda _: None)
    host = f"127.0.0.1:{server.port}".encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/up/large",
        "raw_path": b"/up/large",
        "query_string": f"bytes={size}".encode(),
        "headers": [(b"host", host)],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    messages = []
    seen = set()  # the upstream's connection objects: the body was read to its end, so one is reused

    async def receive():
        await anyio.sleep_forever()  # a client that stays

    async def send(message):
        messages.append(message)

    async with app.router.lifespan_context(app):
        for _ in range(2):
            messages.clear()
            with anyio.fail_after(10):
                await app(scope, receive, send)
            seen.update(server.server.server_state.connections)
            bodies = [message for message in messages if message["type"] == "http.response.body"]
            assert len(bodies) > 2
            assert b"".join(message["body"] for message in bodies) == large_body(size)
            assert [message["more_body"] for message in bodies] == [True] * (len(bodies) - 1) + [False]
            assert bodies[-1]["body"]
    assert len(seen) == 1


async def test_sse_reaches_the_client_event_by_event(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        url = f"{gw.url}/up/sse?events=3&delay=0.4"
        async with client.stream("GET", url) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            with anyio.fail_after(5):
                first = await anext(lines)
            # The first event is here while the upstream has not yet sent the last.
            assert first == "id: 0"
            (record,) = stats.streams_for("/sse")
            assert record.chunks_sent < 3
            rest = [line async for line in lines]
    assert "data: event 2" in rest


async def test_request_body_streams_to_the_upstream_before_the_client_finishes():
    first_chunk_seen = anyio.Event()
    received: list[int] = []

    async def upstream_app(scope, receive, send):
        if scope["type"] != "http":
            return
        total = 0
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            if total:
                first_chunk_seen.set()
            if not message.get("more_body"):
                break
        received.append(total)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def body():
        yield b"x" * 65536
        # Only continue once the upstream holds the first chunk: nothing buffered it whole.
        with anyio.fail_after(5):
            await first_chunk_seen.wait()
        for _ in range(15):
            yield b"y" * 65536

    async with run_uvicorn(upstream_app) as up, run_gateway(route("up", "/up", up.url)) as gw:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{gw.url}/up/upload", content=body())
    assert response.status_code == 200
    assert received == [16 * 65536]


@pytest.mark.parametrize("chunked", [False, True])
async def test_upload_arrives_intact_with_the_clients_framing(upstream, chunked):
    server, _ = upstream
    data = bytes(range(256)) * 8192  # 2 MiB

    async def stream():
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        content = stream() if chunked else data
        response = await client.post(f"{gw.url}/up/echo", content=content)
    echo = response.json()
    headers = dict(echo["headers"])
    assert echo["body_length"] == len(data)
    assert echo["body_sha256"] == hashlib.sha256(data).hexdigest()
    if chunked:
        assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers
    else:
        assert headers.get("content-length") == str(len(data)) and "transfer-encoding" not in headers


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_bodyless_request_stays_bodyless(upstream, method):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.request(method, f"{gw.url}/up/echo")
        if method == "HEAD":
            response = await client.get(f"{gw.url}/up/echo")  # HEAD has no body to read; GET shows the same
    names = [name for name, _ in response.json()["headers"]]
    assert "content-length" not in names and "transfer-encoding" not in names


async def test_head_response_has_no_body_but_keeps_content_length(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.head(f"{gw.url}/up/large?bytes=5000")
    assert response.status_code == 200
    assert response.headers["content-length"] == "5000"
    assert response.content == b""


async def test_client_disconnect_mid_stream_closes_the_upstream_response(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", f"{gw.url}/up/stream?chunks=1000&delay=0.05") as response:
                chunks = response.aiter_raw()
                await anext(chunks)
                await anext(chunks)
                assert gw.connections_in_use() == 1
        # The client is gone: the gateway must notice and close its upstream exchange.
        await stats.wait_for(lambda: stats.streams_for("/stream")[0].state != "open", timeout=5)
        assert stats.streams_for("/stream")[0].chunks_sent < 1000
        with anyio.fail_after(5):
            while gw.connections_in_use():
                await anyio.sleep(0.01)
        assert gw.connections_in_use() == 0


async def test_many_aborted_streams_leave_no_connection_held(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        for _ in range(10):
            async with httpx.AsyncClient() as client:
                async with client.stream("GET", f"{gw.url}/up/sse?events=500&delay=0.02") as response:
                    await anext(response.aiter_raw())
        await stats.wait_for(lambda: stats.open_streams == 0, timeout=10)
        with anyio.fail_after(5):
            while gw.connections_in_use():
                await anyio.sleep(0.01)
        # The pool still works afterwards.
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{gw.url}/up/echo")).status_code == 200
        assert gw.connections_in_use() == 0


async def test_completed_responses_return_their_connections(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(client.get, f"{gw.url}/up/large?bytes=200000")
        assert gw.connections_in_use() == 0


async def test_httpcore_transport_setting_forwards_the_same_way(upstream):
    server, stats = upstream
    data = b"q" * 300_000

    async def chunked():
        yield data[:100_000]
        yield data[100_000:]

    async with run_gateway(route("up", "/up", server.url), upstream_transport="httpcore") as gw:
        async with httpx.AsyncClient() as client:
            echo = (await client.post(f"{gw.url}/up/echo?a=|", content=chunked())).json()
            async with client.stream("GET", f"{gw.url}/up/gzip") as response:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            async with client.stream("GET", f"{gw.url}/up/stream?chunks=1000&delay=0.05") as response:
                chunks = response.aiter_raw()
                await anext(chunks)
                assert gw.connections_in_use() == 1
        await stats.wait_for(lambda: stats.streams_for("/stream")[0].state != "open", timeout=5)
        with anyio.fail_after(5):
            while gw.connections_in_use():
                await anyio.sleep(0.01)
    assert echo["body_length"] == len(data) and echo["query_string"] == "a=|"
    assert [name for name, _ in echo["headers"]].count("user-agent") == 1  # the test client's own
    assert raw == GZIP_BODY
