"""The upstream side of a proxied WebSocket: open one connection, with the route's TLS settings.

httpx has no WebSocket client, so this uses ``websockets`` (its asyncio
implementation): maintained, asyncio-native, with real backpressure (``send``
waits for the socket to drain; reading pauses once ``max_queue`` messages wait),
permessage-deflate and subprotocol negotiation. uvicorn serves the client side
of the same connection with the same library, so one parser is trusted on both
hops. Like ``make_client``, nothing comes from the environment: no proxy, no
cookie jar, no default User-Agent.

Connection failures become gateway errors here, at one boundary (as
``map_upstream_errors`` does for httpx); an upstream that answers the handshake
with a non-101 status raises ``HandshakeRefused`` with what it said, for the
client to receive as it was.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol
from websockets.typing import Subprotocol

from app.errors import UpstreamError, UpstreamTimeout
from app.outbound.clients import ssl_context

# Messages the upstream may have waiting in Gatehouse before its socket stops being read.
MAX_QUEUE = 16
# Keepalive towards the upstream: a vanished upstream is noticed within about 40 s.
PING_INTERVAL = 20.0
CLOSE_TIMEOUT = 5.0
# Pings and pongs from the upstream waiting for the relay; more are dropped (a flood is not buffered).
MAX_PENDING_CONTROL = 16


def withhold_pongs(protocol: Protocol) -> None:
    """Make ``websockets``' sans-I/O ``protocol`` leave pings unanswered, so a relay can pass them on.

    The library answers every ping itself as it parses it (``Protocol.recv_frame``)
    and has no setting to stop it; a relay must let the pong come from the far side.
    The ping is still reported as an event, as the library reports it.
    """
    answer = protocol.recv_frame

    def recv_frame(frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            protocol.events.append(frame)  # what recv_frame does with a ping, less the pong it sends first
        else:
            answer(frame)

    protocol.recv_frame = recv_frame  # type: ignore[method-assign]


class UpstreamConnection(ClientConnection):
    """The upstream side of one WebSocket; the library answers its pings, as a plain client's.

    ``RelayingUpstreamConnection`` leaves them to the relay instead.
    """


class RelayingUpstreamConnection(UpstreamConnection):
    """An upstream connection that relays control frames: the upstream's pings and pongs go to ``control``.

    Its pings are not answered here (the client answers them, through the relay),
    and pongs answering this connection's own keepalive pings stay here. At most
    ``MAX_PENDING_CONTROL`` frames wait in ``control``; more are dropped, so a
    flood of pings costs nothing but the reads: the upstream that floods gets
    fewer pongs back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        withhold_pongs(self.protocol)
        self.control: asyncio.Queue[tuple[Opcode, bytes]] = asyncio.Queue(MAX_PENDING_CONTROL)
        self.dropped_control = 0

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and (
            event.opcode is Opcode.PING or (event.opcode is Opcode.PONG and bytes(event.data) not in self.pending_pings)
        ):
            if self.control.full():
                self.dropped_control += 1
            else:
                self.control.put_nowait((event.opcode, bytes(event.data)))
        super().process_event(event)

    async def send_control(self, opcode: Opcode, payload: bytes) -> None:
        """Send a ping or pong frame with ``payload``; a ping sent here waits for no pong."""
        async with self.send_context():  # waits for the socket to drain, as ``send`` does
            if opcode is Opcode.PING:
                self.protocol.send_ping(payload)
            else:
                self.protocol.send_pong(payload)


class HandshakeRefused(Exception):
    """The upstream answered the handshake with ``status`` instead of 101."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"the upstream refused the WebSocket handshake with {status}")
        self.status = status
        self.headers = headers
        self.body = body
        self.origin: str | None = None  # the upstream that refused, for the access log


def websocket_url(origin: str, target: bytes) -> str:
    """``http://host:port`` + ``/path?q`` as the ``ws://`` (or ``wss://``) URL to connect to."""
    scheme, _, rest = origin.partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + target.decode("ascii")


async def open_websocket(
    url: str,
    *,
    headers: Sequence[tuple[bytes, bytes]],
    subprotocols: Sequence[str],
    verify: bool | Path,
    client_cert: tuple[Path, Path] | None = None,
    connect_timeout: float,
    max_message_bytes: int,
    compression: bool,
    relay_control: bool = False,
) -> UpstreamConnection:
    """Open a WebSocket to ``url``, sending ``headers`` (no Host, no Sec-WebSocket-*) with the handshake.

    ``relay_control``: the client's side can carry pings and pongs, so this
    connection relays them (``RelayingUpstreamConnection``) instead of answering.

    Raises ``HandshakeRefused`` (the upstream said no), ``UpstreamTimeout`` (no
    answer within ``connect_timeout``) or ``UpstreamError`` (unreachable, or an
    answer that is not a WebSocket handshake).
    """
    secure = url.startswith("wss:")
    context: ssl.SSLContext | None = ssl_context(verify, http2=False, client_cert=client_cert) if secure else None
    try:
        connection = await connect(
            url,
            create_connection=RelayingUpstreamConnection if relay_control else UpstreamConnection,
            additional_headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
            subprotocols=[Subprotocol(s) for s in subprotocols] or None,
            compression="deflate" if compression else None,
            user_agent_header=None,
            proxy=None,
            open_timeout=connect_timeout,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_INTERVAL,
            close_timeout=CLOSE_TIMEOUT,
            max_size=max_message_bytes,
            max_queue=MAX_QUEUE,
            ssl=context,
        )
        assert isinstance(connection, UpstreamConnection)
        return connection
    except InvalidStatus as exc:
        response = exc.response
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.raw_items()]
        raise HandshakeRefused(response.status_code, raw, bytes(response.body or b"")) from None
    except TimeoutError:
        detail = f"The upstream did not complete the WebSocket handshake within {connect_timeout}s."
        raise UpstreamTimeout(detail) from None
    except InvalidHandshake as exc:
        raise UpstreamError(f"The upstream's answer was not a valid WebSocket handshake: {exc}.") from None
    except OSError as exc:
        raise UpstreamError(f"Could not connect to the upstream: {exc.strerror or exc}.") from None
