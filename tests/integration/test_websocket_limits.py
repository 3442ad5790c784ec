"""WebSocket limits, backpressure, hostile handshakes, metrics and the access log, over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import struct

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.gateway import OPS_TOKEN, bearer, route, run_gateway
from tests.integration.test_access_log import Written
from tests.servers import parse_response, raw_http
from tests.websocket_upstream import run_websocket_upstream

pytestmark = pytest.mark.anyio

HANDSHAKE = (
    b"GET /ws/echo HTTP/1.1\r\nHost: gatehouse.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def ws_url(gw, path: str) -> str:
    return gw.url.replace("http://", "ws://") + path


async def closed_with(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_a_message_over_the_limit_closes_both_sides_with_1009():
    limits = {"max_message_bytes": 1024}
    with anyio.fail_after(20):
        async with (
            run_websocket_upstream() as up,
            run_gateway(route("ws", "/ws", up.url, websocket=limits)) as gw,
        ):
            async with connect(ws_url(gw, "/ws/echo")) as ws:
                await ws.send(b"a" * 1024)  # at the limit: relayed
                assert await ws.recv() == b"a" * 1024
                await ws.send("é" * 513)  # 1026 bytes of UTF-8: the server's frame parser refuses it
                assert await closed_with(ws) == (1009, "frame with 1026 bytes exceeds limit of 1024 bytes")
            async with connect(ws_url(gw, "/ws/push/1/2048"), max_size=None) as ws:
                assert await closed_with(ws) == (1009, "message too big")
            with anyio.fail_after(5):
                while up.open_connections:
                    await anyio.sleep(0.02)
    assert up.closes[0] == (1009, "frame with 1026 bytes exceeds limit of 1024 bytes")


async def test_idle_and_old_connections_are_closed_with_1001():
    with anyio.fail_after(20):
        async with (
            run_websocket_upstream() as up,
            run_gateway(
                route("idle", "/idle", up.url, websocket={"idle_timeout": 0.5}),
                route("old", "/old", up.url, websocket={"max_lifetime": 1.0}),
            ) as gw,
        ):
            # The clock starts before the handshake: Gatehouse's timers start when it accepts, and on a
            # loaded machine ``connect`` can return well after that.
            started = anyio.current_time()
            async with connect(ws_url(gw, "/idle/echo")) as ws:
                assert await closed_with(ws) == (1001, "idle timeout")
                assert 0.4 < anyio.current_time() - started < 10  # generous: 2 cores shared by many
            started = anyio.current_time()
            async with connect(ws_url(gw, "/old/echo")) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    while True:  # never idle
                        await ws.send("ping")
                        await ws.recv()
                        await anyio.sleep(0.05)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001
                assert closed.value.rcvd.reason == "connection lifetime limit reached"
                assert 0.9 < anyio.current_time() - started < 12
            with anyio.fail_after(5):
                while up.open_connections:
                    await anyio.sleep(0.02)
    assert up.closes == [(1001, "idle timeout"), (1001, "connection lifetime limit reached")]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked frame from the server: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


async def test_a_client_that_does_not_read_holds_back_the_upstream():
    count, size = 256, 256 * 1024  # 64 MiB in all
    handshake = HANDSHAKE.replace(b"/ws/echo", f"/ws/push/{count}/{size}".encode())
    with anyio.fail_after(60):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url)) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            try:
                writer.write(handshake)
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
                await anyio.sleep(1.5)  # reading nothing: only socket buffers fill
                held_back = up.pushed
                received = 0
                while True:
                    opcode, payload = await read_frame(reader)
                    if opcode == 0x8:
                        break
                    received += len(payload)
            finally:
                writer.close()
    # Kernel socket buffers and the upstream client's 16-message queue hold a bounded amount, not 64 MiB.
    assert held_back * size < 40 * 1024 * 1024, held_back
    assert received == count * size
    assert struct.unpack("!H", payload[:2])[0] == 1000


async def test_a_handshake_without_a_key_gets_400_problem_json_and_the_upstream_sees_nothing():
    async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url)) as gw:
        bad = HANDSHAKE.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"")
        response = parse_response(await raw_http("127.0.0.1", gw.port, bad))
    assert response.status == 400
    assert response.header_values(b"content-type") == [b"application/problem+json"]
    assert "Sec-WebSocket-Key" in json.loads(response.body)["detail"]
    assert up.handshakes == []


async def test_an_upgrade_to_another_protocol_is_never_passed_on(upstream):
    server, stats = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        with_body = (
            b"POST /api/echo/smuggled HTTP/1.1\r\nHost: gatehouse.test\r\nConnection: Upgrade\r\n"
            b"Upgrade: foo/1\r\nContent-Length: 5\r\n\r\nhello"
        )
        refused = parse_response(await raw_http("127.0.0.1", gw.port, with_body))
        without_body = (
            b"GET /api/echo/plain HTTP/1.1\r\nHost: gatehouse.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        )
        plain = parse_response(await raw_http("127.0.0.1", gw.port, without_body))
    assert refused.status == 400
    assert refused.header_values(b"content-type") == [b"application/problem+json"]
    assert stats.requests["/echo/smuggled"] == 0
    # Without a body the request is served as plain HTTP/1.1 (RFC 9110 §7.8), never upgraded upstream.
    assert plain.status == 200
    assert plain.header_values(b"connection") == [b"close"]
    assert "upgrade" not in json.loads(plain.body)["headers"].__str__().lower()


@pytest.mark.parametrize(
    ("limits", "announced"),
    [({}, 64 * 1024 * 1024), ({"max_message_bytes": 1024}, 2048)],
    ids=["server cap", "route limit"],
)
async def test_a_frame_over_the_limit_is_refused_before_its_payload_arrives(limits, announced):
    async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url, websocket=limits)) as gw:
        with anyio.fail_after(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            try:
                writer.write(HANDSHAKE)
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101")
                # A binary frame announcing more than allowed; only its header is ever sent.
                writer.write(b"\x82\xff" + struct.pack("!Q", announced) + os.urandom(4))
                await writer.drain()
                frame = await reader.readexactly(4)
            finally:
                writer.close()
    assert frame[0] == 0x88  # a close frame
    assert struct.unpack("!H", frame[2:4])[0] == 1009


async def test_metrics_and_the_access_log_count_each_connection():
    written = Written()
    async with (
        run_websocket_upstream() as up,
        run_gateway(route("ws", "/ws", up.url), access_write=written, metrics_token=OPS_TOKEN) as gw,
        httpx.AsyncClient() as client,
    ):
        async with connect(ws_url(gw, "/ws/echo?token=s3cr3t")) as ws:
            for message in ("one", b"two!"):
                await ws.send(message)
                await ws.recv()
            during = (await client.get(f"{gw.url}/_gatehouse/metrics", headers=bearer())).text
            await ws.close(4000, "done")
        with anyio.fail_after(5):
            while "close_code" not in written.text:
                await anyio.sleep(0.05)
        with pytest.raises(InvalidStatus):
            async with connect(ws_url(gw, "/ws/refuse/403")):
                pass
        with anyio.fail_after(5):
            while written.text.count('"route":"ws"') < 2:
                await anyio.sleep(0.05)
        after = (await client.get(f"{gw.url}/_gatehouse/metrics", headers=bearer())).text
    assert 'gatehouse_websocket_connections{route="ws"} 1.0' in during
    assert 'gatehouse_websocket_connections{route="ws"} 0.0' in after
    for direction in ("to_upstream", "to_client"):
        assert f'gatehouse_websocket_messages_total{{direction="{direction}",route="ws"}} 2.0' in after
        assert f'gatehouse_websocket_bytes_total{{direction="{direction}",route="ws"}} 7.0' in after
    line, refused = [entry for entry in written.json() if entry["route"] == "ws"]
    assert refused["status"] == 403 and refused["upstream"] == up.url and "close_code" not in refused
    assert line["status"] == 101 and line["close_code"] == 4000
    assert line["bytes_in"] == 7 and line["bytes_out"] == 7
    assert line["path"] == "/ws/echo?token=[REDACTED]"
    assert line["upstream"] == up.url
