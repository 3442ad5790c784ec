"""Upstreams that misbehave at the socket level, on ephemeral loopback ports.

``refused_port()`` is a port nothing listens on. ``fault_server(mode)`` is a raw
TCP server that reads each request head and then, by ``mode``:

- ``"hang"``: never answers (until the test ends);
- ``"reset"``: resets the connection (RST) before any response byte;
- ``"reset_mid_body"``: sends a 200 head promising 1 MiB and 1 KiB of it, then resets.

It counts the requests it read (``server.requests``), so a test can tell how
many attempts the gateway made.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from tests.servers import LOOPBACK

FaultMode = Literal["hang", "reset", "reset_mid_body"]


def refused_port() -> int:
    """A loopback port that refuses connections (bound, then closed without listening)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class FaultServer:
    url: str
    mode: FaultMode
    requests: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.asynccontextmanager
async def fault_server(mode: FaultMode) -> AsyncIterator[FaultServer]:
    stop = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state._writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if not head:
                    return
                state.requests += 1
                if mode == "hang":
                    await stop.wait()
                    return
                if mode == "reset_mid_body":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n")
                    writer.write(b"content-length: 1048576\r\n\r\n" + b"x" * 1024)
                    await writer.drain()
                    await asyncio.sleep(0.05)
                _reset(writer)
                return
        finally:
            if not writer.transport.is_closing():
                writer.transport.abort()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    state = FaultServer(url=f"http://{LOOPBACK}:{port}", mode=mode)
    try:
        async with server:
            yield state
            stop.set()
            server.close()
            for writer in state._writers:
                writer.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)
    finally:
        stop.set()
