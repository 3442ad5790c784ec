"""Write coalescing under the real server: head and body in one write, and every byte in order."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest

from app.serving import coalescing
from tests.gateway import route, run_gateway
from tests.upstreams import large_body

pytestmark = pytest.mark.anyio


async def test_a_small_proxied_response_is_one_write(upstream, monkeypatch):
    server, _ = upstream
    flushes: list[list[bytes]] = []
    flush = coalescing.CoalescedWrites.flush

    def recording_flush(self: coalescing.CoalescedWrites) -> None:
        if self._held:
            flushes.append(list(self._held))
        flush(self)

    monkeypatch.setattr(coalescing.CoalescedWrites, "flush", recording_flush)
    async with run_gateway(route("a", "/a", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/a/echo/")
    assert response.status_code == 200
    (held,) = [h for h in flushes if h[0].startswith(b"HTTP/1.1 200")]
    assert len(held) == 2 and held[1] == response.content  # head + body, one write


def _raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_pipelined_requests_get_whole_responses_in_order_and_close_comes_last(upstream):
    server, _ = upstream
    async with run_gateway(route("a", "/a", server.url)) as gw:
        request = b"GET /a/echo/%d HTTP/1.1\r\nhost: x\r\n\r\n"
        last = b"GET /a/large?bytes=300000 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        raw = await anyio.to_thread.run_sync(_raw_exchange, gw.port, request % 1 + request % 2 + last)
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 3
    first, second = raw.index(b'"raw_path": "/echo/1"'), raw.index(b'"raw_path": "/echo/2"')
    assert first < second < raw.index(b"content-length: 300000")
    # The last response (connection: close) arrives whole before the close.
    assert raw.endswith(b"\r\n\r\n" + large_body(300_000))
