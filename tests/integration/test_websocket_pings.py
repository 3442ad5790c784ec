"""Pings and pongs through Gatehouse: relayed end to end, never answered by Gatehouse, under both servers.

The upstream (and here the client) can withhold its pongs, so a pong that arrives
anyway would be Gatehouse's. A pong written by a hop that answers for itself goes
out before any message read after the ping, so one echo round trip after the ping
is enough to know that no such pong was sent: no waiting on a clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode

from app.config.settings import Settings
from app.main import create_app
from app.serving.uvicorn_server import server_config
from tests.gateway import route, run_gateway
from tests.servers import LOOPBACK, run_uvicorn
from tests.websocket_upstream import run_websocket_upstream, withhold_pongs

pytestmark = pytest.mark.anyio
SERVERS = pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])

FLOOD = 2000


class Recorder(ClientConnection):
    """A client that records the pings and pongs it receives; ``withhold=True`` answers no ping."""

    withhold = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pings: list[bytes] = []
        self.pongs: list[bytes] = []
        if self.withhold:
            withhold_pongs(self.protocol)

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings.append(bytes(event.data))
        elif isinstance(event, Frame) and event.opcode is Opcode.PONG:
            self.pongs.append(bytes(event.data))


class Withholding(Recorder):
    withhold = True


def ws_url(gw: Any, path: str) -> str:
    return gw.url.replace("http://", "ws://") + path


async def round_trip(ws: ClientConnection, text: str = "round trip") -> None:
    await ws.send(text)
    assert await ws.recv() == text


async def until(condition: Any) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.sleep(0.01)


@SERVERS
async def test_a_client_ping_is_answered_by_the_upstream_not_by_gatehouse(server):
    with anyio.fail_after(30):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url), http_server=server) as gw:
            async with connect(ws_url(gw, "/ws/echo"), ping_interval=None) as ws:
                pong = await ws.ping(b"answered")
                await asyncio.wait_for(pong, 5)
                assert up.pings == [b"answered"]
            async with connect(ws_url(gw, "/ws/echo?withhold"), ping_interval=None) as ws:
                pong = await ws.ping(b"withheld")
                await until(lambda: b"withheld" in up.pings)
                await round_trip(ws)
                assert not pong.done()  # the upstream withheld it, and no one else answered


@SERVERS
async def test_an_upstream_ping_is_answered_by_the_client_not_by_gatehouse(server):
    with anyio.fail_after(30):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url), http_server=server) as gw:
            async with connect(ws_url(gw, "/ws/ping"), create_connection=Recorder, ping_interval=None) as ws:
                await until(lambda: up.pongs == [b"from upstream"])
                assert ws.pings == [b"from upstream"]
            async with connect(ws_url(gw, "/ws/ping"), create_connection=Withholding, ping_interval=None) as ws:
                await until(lambda: ws.pings == [b"from upstream"])
                await round_trip(ws)
                assert up.pongs == [b"from upstream"]  # only the first client's


@SERVERS
async def test_unsolicited_pongs_are_relayed_both_ways(server):
    with anyio.fail_after(30):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url), http_server=server) as gw:
            async with connect(ws_url(gw, "/ws/pong"), create_connection=Recorder, ping_interval=None) as ws:
                await ws.pong(b"from the client")
                await until(lambda: up.pongs == [b"from the client"] and ws.pongs == [b"from upstream"])
                await round_trip(ws)


@SERVERS
async def test_a_flood_of_pings_from_the_upstream_is_shed_not_buffered(server):
    with anyio.fail_after(30):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url), http_server=server) as gw:
            async with connect(ws_url(gw, f"/ws/flood/{FLOOD}"), create_connection=Recorder, ping_interval=None) as ws:
                assert await ws.recv() == "after the flood"
                await round_trip(ws)
                # At most 16 wait in Gatehouse at a time; the rest of a read's worth is dropped.
                assert 1 <= len(ws.pings) < FLOOD / 4
                assert len(up.pongs) == len(ws.pings)  # each relayed ping was answered once, by the client


@SERVERS
async def test_a_flood_of_pings_from_the_client_is_bounded(server):
    with anyio.fail_after(30):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url), http_server=server) as gw:
            async with connect(ws_url(gw, "/ws/echo"), create_connection=Recorder, ping_interval=None) as ws:
                for i in range(FLOOD):
                    ws.protocol.send_ping(b"f%d" % i)
                ws.transport.write(b"".join(ws.protocol.data_to_send()))  # one write
                await round_trip(ws)
                await until(lambda: len(ws.pongs) == len(up.pings))
                assert 1 <= len(up.pings) <= FLOOD
                if server == "uvicorn":  # hypercorn stops reading instead (its queue to the app holds 10)
                    assert len(up.pings) < FLOOD / 4


async def test_under_a_server_without_the_ping_extension_each_hop_answers_its_own_pings():
    # uvicorn's own WebSocket protocol, as when the app is served by a server Gatehouse did not configure:
    # ASGI carries no pings, so none is relayed; the server answers the client's, Gatehouse the upstream's.
    with anyio.fail_after(30):
        async with run_websocket_upstream() as up:
            app = create_app(Settings(routes=[route("ws", "/ws", up.url)]))
            config = server_config(app, host=LOOPBACK, port=0, log_level="warning", ws="websockets-sansio")
            async with run_uvicorn(config=config) as gw:
                url = ws_url(gw, "/ws/ping")
                async with connect(url, create_connection=Recorder, ping_interval=None) as ws:
                    await asyncio.wait_for(await ws.ping(b"from the client"), 5)
                    await until(lambda: up.pongs == [b"from upstream"])
                    await round_trip(ws)
                    assert ws.pings == []
        assert up.pings == []


async def test_gatehouse_keepalive_pings_are_answered_on_their_hop_and_their_pongs_not_relayed(monkeypatch):
    # Both hops' keepalives every 0.1 s: the client answers the server's pings, the upstream the upstream
    # client's; neither pong may reach the other side, which sent no ping.
    monkeypatch.setattr("app.outbound.websocket.PING_INTERVAL", 0.1)
    with anyio.fail_after(30):
        async with run_websocket_upstream() as up:
            app = create_app(Settings(routes=[route("ws", "/ws", up.url)]))
            config = server_config(app, host=LOOPBACK, port=0, log_level="warning", ws_ping_interval=0.1)
            async with run_uvicorn(config=config) as gw:
                async with connect(ws_url(gw, "/ws/echo"), create_connection=Recorder, ping_interval=None) as ws:
                    await until(lambda: len(ws.pings) >= 3 and len(up.pings) >= 3)  # both keepalives ran
                    await round_trip(ws)
                    assert ws.pongs == []
        assert up.pongs == []
