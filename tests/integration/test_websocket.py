"""WebSocket proxying end to end: a ``websockets`` client, Gatehouse under uvicorn, a ``websockets`` upstream."""

from __future__ import annotations

import json

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.config.hashing import hash_api_key
from tests.gateway import route, run_gateway
from tests.websocket_upstream import run_websocket_upstream

pytestmark = pytest.mark.anyio

KEY = "k" * 32


def ws_url(gw, path: str) -> str:
    return gw.url.replace("http://", "ws://") + path


async def test_text_and_binary_messages_are_relayed_with_the_negotiated_subprotocol():
    with anyio.fail_after(20):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url)) as gw:
            async with connect(ws_url(gw, "/ws/echo?x=1"), subprotocols=["chat.v0", "chat.v1"]) as ws:
                assert ws.subprotocol == "chat.v1"
                await ws.send("héllo")
                assert await ws.recv() == "héllo"
                await ws.send(b"\x00\xff" * 1000)
                assert await ws.recv() == b"\x00\xff" * 1000
    path, headers = up.handshakes[0]
    assert path == "/echo?x=1"
    assert headers["sec-websocket-protocol"] == "chat.v0, chat.v1"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-prefix"] == "/ws"
    assert headers["host"] == f"127.0.0.1:{up.port}"


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
async def test_close_codes_and_reasons_pass_both_ways(server):
    with anyio.fail_after(20):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url), http_server=server) as gw:
            async with connect(ws_url(gw, "/ws/close/4001")) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye 4001")

            async with connect(ws_url(gw, "/ws/echo")) as ws:
                await ws.send("x")
                await ws.recv()
                await ws.close(4002, "client done")
            async with connect(ws_url(gw, "/ws/echo")) as ws:
                await ws.close()  # the default close: 1000, no reason
            with anyio.fail_after(5):
                while len(up.closes) < 3:
                    await anyio.sleep(0.02)
    assert up.closes[1] == (4002, "client done")
    assert up.closes[2] == (1000, "")


async def test_an_upstream_refusal_reaches_the_client_with_its_status_and_body():
    with anyio.fail_after(20):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url)) as gw:
            for status in (401, 503):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(ws_url(gw, f"/ws/refuse/{status}")):
                        pass
                response = refused.value.response
                assert response.status_code == status
                assert json.loads(bytes(response.body)) == {"refused": status}
                assert response.headers["www-authenticate"] == 'Bearer realm="upstream"'


async def test_an_upstream_that_is_down_gives_502_problem_json():
    with anyio.fail_after(20):
        async with run_gateway(route("ws", "/ws", "http://127.0.0.1:9")) as gw:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(ws_url(gw, "/ws/echo")):
                    pass
    response = refused.value.response
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(bytes(response.body))["status"] == 502


async def test_auth_runs_before_the_upstream_is_contacted():
    auth = {"type": "api_key", "keys": {"app": hash_api_key(KEY)}}
    with anyio.fail_after(20):
        async with run_websocket_upstream() as up, run_gateway(route("ws", "/ws", up.url, auth=auth)) as gw:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(ws_url(gw, "/ws/echo")):
                    pass
            assert refused.value.response.status_code == 401
            assert refused.value.response.headers["content-type"] == "application/problem+json"
            assert up.handshakes == []
            async with connect(ws_url(gw, "/ws/echo"), additional_headers={"X-API-Key": KEY}) as ws:
                await ws.send("in")
                assert await ws.recv() == "in"
    assert len(up.handshakes) == 1


async def test_a_browser_origin_must_be_allowed_by_the_route():
    cors = {"allow_origins": ["http://app.test"]}
    with anyio.fail_after(20):
        async with (
            run_websocket_upstream() as up,
            run_gateway(route("ws", "/ws", up.url, cors=cors), route("plain", "/plain", up.url)) as gw,
        ):
            async with connect(ws_url(gw, "/ws/echo"), origin="http://app.test") as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"
            refusals = [
                ("/ws/echo", "http://evil.test"),
                # Without a CORS policy only the page's own origin may connect.
                ("/plain/echo", "http://app.test"),
            ]
            for path, origin in refusals:
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(ws_url(gw, path), origin=origin):
                        pass
                assert refused.value.response.status_code == 403, (path, origin)
            async with connect(ws_url(gw, "/plain/echo"), origin=f"http://127.0.0.1:{gw.port}") as ws:
                await ws.send("same origin")
                assert await ws.recv() == "same origin"
    assert [path for path, _ in up.handshakes] == ["/echo", "/echo"]
    assert up.handshakes[0][1]["origin"] == "http://app.test"


async def test_routes_that_refuse_websockets_say_so():
    with anyio.fail_after(20):
        async with (
            run_websocket_upstream() as up,
            run_gateway(
                route("off", "/off", up.url, websocket=False),
                route("posts", "/posts", up.url, methods=["POST"]),
            ) as gw,
        ):
            for path, status in (("/off/echo", 400), ("/posts/echo", 400), ("/nowhere", 404)):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(ws_url(gw, path)):
                        pass
                assert refused.value.response.status_code == status, path
    assert up.handshakes == []


async def test_compression_towards_the_upstream_is_off_unless_the_route_asks_for_it():
    with anyio.fail_after(20):
        async with (
            run_websocket_upstream() as up,
            run_gateway(
                route("plain", "/plain", up.url), route("zip", "/zip", up.url, websocket={"compression": True})
            ) as gw,
        ):
            for path in ("/plain/echo", "/zip/echo"):
                async with connect(ws_url(gw, path)) as ws:
                    await ws.send("a" * 10_000)
                    assert await ws.recv() == "a" * 10_000
                    # The client's hop is never compressed.
                    assert ws.response is not None and "sec-websocket-extensions" not in ws.response.headers
    offered = [headers.get("sec-websocket-extensions", "") for _, headers in up.handshakes]
    assert "permessage-deflate" not in offered[0]
    assert "permessage-deflate" in offered[1]


async def test_websockets_are_proxied_under_hypercorn_too():
    with anyio.fail_after(30):
        async with (
            run_websocket_upstream() as up,
            run_gateway(
                route("ws", "/ws", up.url, cors={"allow_origins": ["http://app.test"]}), http_server="hypercorn"
            ) as gw,
        ):
            async with connect(ws_url(gw, "/ws/echo"), subprotocols=["chat.v2"], origin="http://app.test") as ws:
                assert ws.subprotocol == "chat.v2"
                await ws.send(b"over hypercorn")
                assert await ws.recv() == b"over hypercorn"
                await ws.close(4003, "bye")
            async with connect(ws_url(gw, "/ws/close/4001"), origin="http://app.test") as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye 4001")
            for path, origin, status in (("/ws/echo", "http://evil.test", 403), ("/ws/refuse/401", None, 401)):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(ws_url(gw, path), origin=origin):
                        pass
                assert refused.value.response.status_code == status
            with anyio.fail_after(5):
                while len(up.closes) < 1:
                    await anyio.sleep(0.02)
    assert up.closes[0] == (4003, "bye")
