"""A real WebSocket upstream (``websockets``' asyncio server) on an ephemeral loopback port.

Paths decide what it does, so one server serves every test:

- ``/echo...``: echoes every message (text as text, bytes as bytes);
- ``/close/CODE``: closes at once with CODE and the reason ``bye CODE``;
- ``/push/N/SIZE``: sends N binary messages of SIZE bytes as fast as the client reads, then closes 1000;
- ``/refuse/STATUS``: refuses the handshake with STATUS and a JSON body;
- ``/headers``: sends the handshake's request headers as one JSON text message, then echoes;
- ``/ping``: pings the client with ``from upstream`` (without waiting for the pong), then echoes;
- ``/pong``: sends an unsolicited pong, ``from upstream``, then echoes;
- ``/flood/N``: sends N pings (``f0``, ``f1``, ...) in one write, then the text ``after the flood``, then echoes.

With ``withhold`` in the query it answers no ping (``withhold_pongs``): a pong the
client then gets did not come from here. It selects the first subprotocol it supports
(``chat.v2``, ``chat.v1``) and records each handshake (path, headers) in ``handshakes``,
and every ping and pong it receives, in order, in ``pings`` and ``pongs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol

from tests.servers import LOOPBACK

SUBPROTOCOLS = ["chat.v2", "chat.v1"]


def _first_supported(_connection: ServerConnection, offered: Any) -> Any:
    return next((p for p in offered if p in SUBPROTOCOLS), None)


@dataclass
class WebSocketUpstream:
    url: str  # http://127.0.0.1:PORT, as a route's upstream
    port: int
    handshakes: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    closes: list[tuple[int | None, str | None]] = field(default_factory=list)  # close frames it received
    open_connections: int = 0
    pushed: int = 0  # messages /push/ has sent so far
    pings: list[bytes] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)


def withhold_pongs(protocol: Protocol) -> None:
    """Make a ``websockets`` connection leave pings unanswered (the library answers each as it parses it)."""
    answer = protocol.recv_frame

    def recv_frame(frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            protocol.events.append(frame)  # what recv_frame does with a ping, less the pong
        else:
            answer(frame)

    protocol.recv_frame = recv_frame  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def run_websocket_upstream(**options: Any) -> AsyncIterator[WebSocketUpstream]:
    upstream = WebSocketUpstream(url="", port=0)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        upstream.handshakes.append((request.path, {k.lower(): v for k, v in request.headers.raw_items()}))
        if "withhold" in request.path.partition("?")[2]:
            withhold_pongs(connection.protocol)
        if request.path.startswith("/refuse/"):
            status = int(request.path.split("/")[2])
            body = json.dumps({"refused": status}).encode()
            headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            headers["WWW-Authenticate"] = 'Bearer realm="upstream"'
            return Response(status, HTTPStatus(status).phrase, headers, body)
        return None

    class Recording(ServerConnection):
        def process_event(self, event: Any) -> None:
            super().process_event(event)
            if isinstance(event, Frame) and event.opcode is Opcode.PING:
                upstream.pings.append(bytes(event.data))
            elif isinstance(event, Frame) and event.opcode is Opcode.PONG:
                upstream.pongs.append(bytes(event.data))

    async def handler(ws: ServerConnection) -> None:
        upstream.open_connections += 1
        try:
            path = ws.request.path if ws.request is not None else "/"
            if path.startswith("/close/"):
                code = int(path.split("/")[2])
                await ws.close(code, f"bye {code}")
                return
            if path.startswith("/push/"):
                _, _, count, size = path.split("/")
                payload = b"x" * int(size)
                for _ in range(int(count)):
                    await ws.send(payload)
                    upstream.pushed += 1
                await ws.close(1000, "pushed")
                return
            if path.startswith("/ping"):
                await ws.ping(b"from upstream")
            if path.startswith("/pong"):
                await ws.pong(b"from upstream")
            if path.startswith("/flood/"):
                for i in range(int(path.partition("?")[0].split("/")[2])):
                    ws.protocol.send_ping(b"f%d" % i)
                ws.transport.write(b"".join(ws.protocol.data_to_send()))
                await ws.send("after the flood")
            if path.startswith("/headers"):
                assert ws.request is not None
                await ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()}))
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass  # a close with an error code ends the loop by raising; the code is recorded below
        finally:
            upstream.open_connections -= 1
            closed = ws.protocol.close_rcvd
            upstream.closes.append((closed.code, closed.reason) if closed else (None, None))

    options.setdefault("max_size", 32 * 1024 * 1024)
    async with serve(
        handler,
        LOOPBACK,
        0,
        process_request=process_request,
        select_subprotocol=_first_supported,
        create_connection=Recording,
        **options,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        upstream.url, upstream.port = f"http://{LOOPBACK}:{port}", port
        yield upstream


async def _serve_forever(port: int) -> None:
    async with serve(_echo, LOOPBACK, port):
        print(f"websocket upstream on {LOOPBACK}:{port}", flush=True)  # noqa: T201
        await asyncio.Future()


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


if __name__ == "__main__":  # an echo upstream in its own process: python -m tests.websocket_upstream PORT
    asyncio.run(_serve_forever(int(sys.argv[1])))
