"""The test harness itself: real servers, the test upstream, raw sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import uvicorn

from tests.servers import LOOPBACK, parse_response, raw_http, run_hypercorn_h2, run_uvicorn
from tests.upstreams import (
    GZIP_BODY,
    LARGE_CHUNK,
    SET_COOKIES,
    UPSTREAM_DATE,
    UPSTREAM_SERVER,
    large_body,
    make_upstream,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def test_run_uvicorn_serves_on_an_ephemeral_loopback_port(upstream, client):
    server, stats = upstream
    assert server.url == f"http://{LOOPBACK}:{server.port}"
    assert server.port != 0 and server.server.started

    response = await client.get(f"{server.url}/echo")

    assert response.status_code == 200
    assert response.headers["server"] == "uvicorn"  # default uvicorn settings
    assert stats.requests["/echo"] == 1


async def test_run_uvicorn_accepts_a_prepared_config():
    app, _ = make_upstream()
    config = uvicorn.Config(app, host="0.0.0.0", port=1, server_header=False)
    async with run_uvicorn(config=config) as server, httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/echo")
    assert server.url.startswith(f"http://{LOOPBACK}:")
    assert "server" not in response.headers


async def test_run_uvicorn_surfaces_a_failed_startup():
    async def refuses_to_start(scope, receive, send):
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no"})

    with pytest.raises(RuntimeError, match="exited with status 3"):
        async with run_uvicorn(refuses_to_start, lifespan="on", log_level="critical"):
            pass  # pragma: no cover


async def test_echo_reports_raw_query_bytes_and_headers_in_wire_order(upstream):
    server, _ = upstream
    request = (
        b"POST /echo/../echo?b=2&a=%2F%zz&a=1&empty=&sp+ace HTTP/1.1\r\n"
        b"Host: upstream.test\r\n"
        b"X-Dup: one\r\n"
        b"X-Other: x\r\n"
        b"X-Dup: two\r\n"
        b"Content-Length: 5\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"hello"
    )

    response = parse_response(await raw_http(LOOPBACK, server.port, request, timeout=5))

    assert response.status == 200
    echo = json.loads(response.body)
    assert echo["method"] == "POST"
    assert echo["raw_path"] == "/echo/../echo"
    assert echo["query_string"] == "b=2&a=%2F%zz&a=1&empty=&sp+ace"
    assert echo["headers"] == [
        ["host", "upstream.test"],
        ["x-dup", "one"],
        ["x-other", "x"],
        ["x-dup", "two"],
        ["content-length", "5"],
        ["connection", "close"],
    ]
    assert echo["body_length"] == 5
    assert echo["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


async def test_raw_http_reads_a_chunked_response_to_its_end(upstream):
    server, _ = upstream
    request = b"GET /stream?chunks=3&delay=0 HTTP/1.1\r\nHost: x\r\n\r\n"  # keep-alive: no close to wait for

    data = await raw_http(LOOPBACK, server.port, request, timeout=5)

    response = parse_response(data)
    assert response.header_values(b"transfer-encoding") == [b"chunked"]
    assert response.body == b"chunk 0\nchunk 1\nchunk 2\n"


async def test_raw_http_returns_the_rejection_of_a_malformed_request(upstream):
    server, stats = upstream

    data = await raw_http(LOOPBACK, server.port, b"GET /echo HTTP/1.1\r\nBad Header\r\n\r\n", timeout=5)

    assert parse_response(data).status == 400
    assert stats.requests["/echo"] == 0


async def test_two_set_cookie_fields_arrive_as_two(upstream, client):
    server, _ = upstream

    response = await client.get(f"{server.url}/cookies")

    assert response.headers.get_list("set-cookie") == [cookie.decode() for cookie in SET_COOKIES]
    raw = await raw_http(LOOPBACK, server.port, b"GET /cookies HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    assert parse_response(raw).header_values(b"set-cookie") == list(SET_COOKIES)


async def test_gzip_body_is_the_known_bytes(upstream, client):
    server, _ = upstream

    async with client.stream("GET", f"{server.url}/gzip") as response:
        body = b"".join([chunk async for chunk in response.aiter_raw()])

    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(GZIP_BODY))
    assert body == GZIP_BODY


async def test_redirect_sends_location_as_given_or_on_its_own_origin(upstream, client):
    server, _ = upstream

    relative = await client.get(f"{server.url}/redirect", params={"to": "/elsewhere?x=1"})
    absolute = await client.get(f"{server.url}/redirect", params={"status": "307"})

    assert (relative.status_code, relative.headers["location"]) == (302, "/elsewhere?x=1")
    assert (absolute.status_code, absolute.headers["location"]) == (307, f"{server.url}/echo")


async def test_status_endpoint_answers_with_any_status(upstream, client):
    server, stats = upstream

    for code in (200, 201, 204, 404, 418, 502, 503):
        response = await client.get(f"{server.url}/status/{code}")

        assert response.status_code == code
        assert response.content == (b"" if code == 204 else b'{"status": %d}' % code)
        assert stats.requests[f"/status/{code}"] == 1


async def test_sleep_answers_after_sleeping(upstream, client):
    server, stats = upstream

    started = time.monotonic()
    response = await client.get(f"{server.url}/sleep", params={"seconds": "0.2"})

    assert response.json() == {"slept": 0.2}
    assert time.monotonic() - started >= 0.19
    assert [record.state for record in stats.streams_for("/sleep")] == ["finished"]


async def test_sleep_gives_up_when_the_client_leaves(upstream, client):
    server, stats = upstream

    with pytest.raises(httpx.ReadTimeout):
        await client.get(f"{server.url}/sleep", params={"seconds": "30"}, timeout=0.2)

    await stats.wait_for(lambda: stats.streams[0].state == "disconnected")


async def test_large_body_streams_in_64_kib_chunks(upstream, client):
    server, stats = upstream
    size = 3 * LARGE_CHUNK + 123

    response = await client.get(f"{server.url}/large", params={"bytes": str(size)})

    assert response.headers["content-length"] == str(size)
    assert response.content == large_body(size)
    assert large_body(2 * LARGE_CHUNK)[:LARGE_CHUNK] != large_body(2 * LARGE_CHUNK)[LARGE_CHUNK:]
    assert stats.streams[0].chunks_sent == 4


async def test_upload_reads_a_streamed_body(upstream, client):
    server, _ = upstream
    parts = [b"a" * 50_000, b"b" * 70_000, b"c"]

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    response = await client.post(f"{server.url}/upload", content=body())

    joined = b"".join(parts)
    assert response.json()["length"] == len(joined)
    assert response.json()["sha256"] == hashlib.sha256(joined).hexdigest()
    assert response.json()["messages"] >= 1


async def test_headers_endpoint_sends_its_own_date_and_server(upstream, client):
    server, _ = upstream

    response = await client.get(f"{server.url}/headers")

    # uvicorn adds its own fields in front of the app's.
    assert response.headers.get_list("server") == ["uvicorn", UPSTREAM_SERVER.decode()]
    assert response.headers.get_list("date")[1] == UPSTREAM_DATE.decode()


async def test_stream_finishes_and_is_recorded(upstream, client):
    server, stats = upstream

    response = await client.get(f"{server.url}/stream", params={"chunks": "3", "delay": "0.01"})

    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
    assert response.headers["transfer-encoding"] == "chunked"
    assert [(record.state, record.chunks_sent) for record in stats.streams] == [("finished", 3)]
    assert stats.open_streams == 0


async def test_client_disconnect_mid_stream_is_recorded(upstream, client):
    server, stats = upstream

    async with client.stream("GET", f"{server.url}/stream", params={"chunks": "1000", "delay": "0.01"}) as r:
        async for _ in r.aiter_raw():
            break
        assert stats.open_streams == 1

    await stats.wait_for(lambda: stats.streams[0].state == "disconnected")
    assert stats.streams[0].chunks_sent < 1000


async def test_sse_events_arrive_one_at_a_time(upstream, client):
    server, stats = upstream
    received_at = []

    params = {"events": "3", "delay": "0.15"}
    async with client.stream("GET", f"{server.url}/sse", params=params) as response:
        assert response.headers["content-type"] == "text/event-stream"
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                received_at.append((line, time.monotonic()))

    assert [line for line, _ in received_at] == ["data: event 0", "data: event 1", "data: event 2"]
    sent_at = stats.streams[0].sent_at
    # The first event was in the client's hands before the upstream wrote the last one.
    assert received_at[0][1] < sent_at[-1]
    assert sent_at[-1] - sent_at[0] >= 0.25


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2-tls"])
async def test_hypercorn_serves_the_upstream_over_http2(tls):
    app, stats = make_upstream()
    async with run_hypercorn_h2(app, tls=tls) as server:
        verify = server.client_ssl_context() if tls else True
        async with httpx.AsyncClient(http1=tls, http2=True, verify=verify, timeout=5) as client:
            echo = await client.get(f"{server.url}/echo?q=%41")
            async with client.stream("GET", f"{server.url}/stream?chunks=100&delay=0.01") as response:
                async for _ in response.aiter_raw():
                    break

        assert server.url.startswith("https://" if tls else "http://")
        assert echo.http_version == "HTTP/2"
        assert echo.json()["http_version"] == "2"
        assert echo.json()["query_string"] == "q=%41"
        assert response.http_version == "HTTP/2"
        # A reset HTTP/2 stream reaches the app as a disconnect, as a closed connection does.
        await stats.wait_for(lambda: stats.streams[0].state == "disconnected")


async def test_hypercorn_cleartext_also_speaks_http1():
    app, _ = make_upstream()
    async with run_hypercorn_h2(app, tls=False) as server, httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/cookies")
    assert response.http_version == "HTTP/1.1"
    assert response.headers.get_list("set-cookie") == [cookie.decode() for cookie in SET_COOKIES]


async def test_a_request_left_hanging_fails_shutdown_within_the_bound():
    app, stats = make_upstream()
    writer = None
    try:
        with anyio.fail_after(5), pytest.raises(TimeoutError, match="did not shut down within 0.3s"):
            async with run_uvicorn(app, shutdown_timeout=0.3, log_level="critical") as server:
                _, writer = await asyncio.open_connection(LOOPBACK, server.port)
                writer.write(b"GET /sleep?seconds=30 HTTP/1.1\r\nHost: x\r\n\r\n")
                await stats.wait_for(lambda: stats.open_streams == 1)
    finally:
        if writer is not None:
            writer.close()
            await writer.wait_closed()

    assert stats.streams[0].state == "cancelled"
