"""Slow and surplus clients over raw sockets: the ``server:`` settings bound what one connection may hold."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import anyio
import pytest

from tests.gateway import route, run_gateway
from tests.servers import LOOPBACK, parse_response, raw_http

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("http_server", ["uvicorn", "hypercorn"])]


def get(path: bytes, *, close: bool = False) -> bytes:
    return (
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: gatehouse.test\r\n"
        + (b"Connection: close\r\n" if close else b"")
        + b"\r\n"
    )


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response with a Content-Length body: (head, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head, await reader.readexactly(length)


@contextlib.asynccontextmanager
async def connection(port: int):
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_a_client_trickling_header_lines_gets_408_and_is_closed(upstream, http_server):
    server, stats = upstream
    async with run_gateway(
        route("svc", "/svc", server.url), server={"header_timeout": 1}, http_server=http_server
    ) as gw:
        async with connection(gw.port) as (reader, writer):
            started = time.monotonic()
            writer.write(b"GET /svc/echo/x HTTP/1.1\r\nHost: gatehouse.test\r\n")
            answer = b""
            with anyio.fail_after(5):
                for i in range(50):  # one header line every 0.2 s: never done, never idle
                    writer.write(b"X-Trickle-%d: 1\r\n" % i)
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        answer += await asyncio.wait_for(reader.read(65536), 0.2)
                    if answer:
                        break
                while chunk := await reader.read(65536):  # then the server closes
                    answer += chunk
            waited = time.monotonic() - started
    response = parse_response(answer)
    assert response.status == 408
    assert response.header_values(b"connection") == [b"close"]
    assert response.header_values(b"content-type") == [b"application/problem+json"]
    problem = json.loads(response.body)
    assert problem["type"] == "urn:gatehouse:problem:request-timeout"
    assert response.header_values(b"x-request-id") == [problem["request_id"].encode()]
    assert 0.9 <= waited < 3
    assert stats.requests == {}


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(http_server):
    async with (
        run_gateway(server={"header_timeout": 0.5}, http_server=http_server) as gw,
        connection(gw.port) as (reader, _),
    ):
        with anyio.fail_after(3):
            assert await reader.read(65536) == b""


async def test_the_header_clock_does_not_count_keep_alive_idle_time(upstream, http_server):
    server, stats = upstream
    settings = {"header_timeout": 0.5, "keepalive_timeout": 5}
    async with run_gateway(route("svc", "/svc", server.url), server=settings, http_server=http_server) as gw:
        async with connection(gw.port) as (reader, writer):
            with anyio.fail_after(5):
                writer.write(get(b"/svc/echo/one"))
                head, _ = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200 ")
                await asyncio.sleep(1.2)  # idle past the header timeout, within the keep-alive one
                writer.write(get(b"/svc/echo/two"))
                head, _ = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200 ")
    assert stats.requests["/echo/one"] == stats.requests["/echo/two"] == 1


async def test_an_idle_keep_alive_connection_is_closed_after_keepalive_timeout(upstream, http_server):
    server, _ = upstream
    async with run_gateway(
        route("svc", "/svc", server.url), server={"keepalive_timeout": 0.5}, http_server=http_server
    ) as gw:
        async with connection(gw.port) as (reader, writer):
            with anyio.fail_after(5):
                writer.write(get(b"/svc/echo/one"))
                head, _ = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200 ")
                started = time.monotonic()
                assert await reader.read(65536) == b""
                assert time.monotonic() - started < 2


async def test_the_keep_alive_clock_restarts_after_each_response(upstream, http_server):
    """Each response gives the connection a whole keep-alive timeout again; idle after the last, it closes."""
    server, stats = upstream
    async with run_gateway(
        route("svc", "/svc", server.url), server={"keepalive_timeout": 0.6}, http_server=http_server
    ) as gw:
        async with connection(gw.port) as (reader, writer):
            with anyio.fail_after(8):
                for i in range(5):  # 1.6 s in all, each gap within the timeout
                    writer.write(get(b"/svc/echo/%d" % i))
                    head, _ = await read_response(reader)
                    assert head.startswith(b"HTTP/1.1 200 ")
                    await asyncio.sleep(0.4)
                writer.write(get(b"/svc/echo/last"))
                head, _ = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200 ")
                started = time.monotonic()
                assert await reader.read(65536) == b""
                assert 0.4 <= time.monotonic() - started < 2
    assert stats.requests["/echo/last"] == 1


async def test_a_connection_over_max_connections_gets_503_and_is_closed(upstream, http_server):
    server, stats = upstream
    async with run_gateway(
        route("svc", "/svc", server.url), server={"max_connections": 2}, http_server=http_server
    ) as gw:
        async with connection(gw.port) as (r1, w1), connection(gw.port) as (r2, w2):
            with anyio.fail_after(5):
                for reader, writer in ((r1, w1), (r2, w2)):  # two keep-alive connections, both answered
                    writer.write(get(b"/svc/echo/held"))
                    head, _ = await read_response(reader)
                    assert head.startswith(b"HTTP/1.1 200 ")
            refused = parse_response(await raw_http(LOOPBACK, gw.port, get(b"/svc/echo/third")))
            w1.close()
        with anyio.fail_after(5):  # one closed: a new connection is served again
            while True:
                again = parse_response(await raw_http(LOOPBACK, gw.port, get(b"/svc/echo/later", close=True)))
                if again.status == 200:
                    break
                await asyncio.sleep(0.05)
    assert refused.status == 503
    assert refused.header_values(b"connection") == [b"close"]
    assert refused.header_values(b"retry-after") == [b"1"]
    assert json.loads(refused.body)["type"] == "urn:gatehouse:problem:too-many-connections"
    assert "/echo/third" not in stats.requests
    assert stats.requests["/echo/held"] == 2


async def test_an_oversized_request_head_gets_a_problem_and_nothing_reaches_the_upstream(upstream, http_server):
    server, stats = upstream
    huge_header = get(b"/svc/echo/x").replace(b"\r\n\r\n", b"\r\nX-Huge: " + b"a" * 200_000 + b"\r\n\r\n")
    huge_target = get(b"/svc/echo/" + b"a" * 200_000)
    async with run_gateway(route("svc", "/svc", server.url), http_server=http_server) as gw:
        for data in (huge_header, huge_target):
            response = parse_response(await raw_http(LOOPBACK, gw.port, data))
            assert response.status in (400, 431, 414), response.status
            assert response.header_values(b"content-type") == [b"application/problem+json"], response.body[:100]
    assert stats.requests == {}
