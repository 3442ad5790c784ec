"""Limits that protect the gateway: body size while streaming, header limits, slow clients."""

from __future__ import annotations

import asyncio
import time

import anyio
import httpx
import pytest

from tests.gateway import route, run_gateway
from tests.servers import parse_response

pytestmark = pytest.mark.anyio


async def test_chunked_body_over_the_limit_gets_413_while_the_client_is_still_sending(upstream):
    server, _ = upstream
    spec = route("u", "/u", server.url, max_body_bytes=65536)
    chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"  # 64 KiB per chunk, 64 chunks offered
    async with run_gateway(spec) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        sent = 0
        received = b""
        try:
            writer.write(b"POST /u/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            with anyio.fail_after(10):
                while sent < 64 and b"\r\n\r\n" not in received:
                    writer.write(chunk)
                    await writer.drain()
                    sent += 1
                    with anyio.move_on_after(0.05):
                        received += await reader.read(65536)
                while not _complete(received) and (data := await reader.read(65536)):
                    received += data
        except ConnectionResetError:
            pass
        finally:
            writer.close()
            with anyio.CancelScope(shield=True):
                try:
                    await writer.wait_closed()
                except OSError:
                    pass
    assert parse_response(received).status == 413
    assert sent < 16  # answered after a couple of chunks, not after the whole body was buffered


async def test_header_limits_are_configurable(upstream):
    server, stats = upstream
    async with (
        run_gateway(route("u", "/u", server.url), max_header_count=10, max_header_bytes=1024) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        many = await client.get("/u/echo/x", headers={f"x-h{i}": "v" for i in range(12)})
        big = await client.get("/u/echo/x", headers={"x-big": "a" * 2000})
        fine = await client.get("/u/echo/x", headers={"x-small": "a" * 100})
    assert many.status_code == 431 and big.status_code == 431
    assert many.json()["type"] == "urn:gatehouse:problem:headers-too-large"
    assert fine.status_code == 200
    assert stats.requests["/echo/x"] == 1


async def test_a_client_trickling_its_body_is_cut_off_after_the_write_timeout(upstream):
    server, _ = upstream
    spec = route("u", "/u", server.url, timeout={"write": 0.5})
    async with run_gateway(spec) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            head = b"POST /u/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
            writer.write(head + b"x" * 10)
            await writer.drain()
            started = time.monotonic()
            received = b""
            with anyio.fail_after(5):
                while chunk := await reader.read(65536):
                    received += chunk
            elapsed = time.monotonic() - started
        finally:
            writer.close()
            await writer.wait_closed()
    response = parse_response(received)
    assert response.status == 408
    assert b"request-timeout" in response.body
    assert 0.4 < elapsed < 4  # cut off after the write timeout, and the connection closed


def _complete(data: bytes) -> bool:
    try:
        parse_response(data)
    except (ValueError, IndexError):
        return False
    return True
