"""Relaying one WebSocket: messages both ways between the client (ASGI) and the upstream (``websockets``).

Two pumps run side by side, one per direction, and each awaits the far side
before reading the next message: ``ClientConnection.send`` waits for the
upstream socket to drain, and ASGI ``send`` waits for the client's transport.
A slow reader on either side therefore stops reads on the other, through TCP,
instead of growing a buffer: at most one message per direction is in
Gatehouse's hands, plus the upstream client's ``max_queue``.

Whichever side ends first decides the close the other side gets: a close
frame's code and reason are passed on as they were; a vanished upstream gives
the client 1011; a message over ``max_message_bytes`` 1009 both ways; idleness,
the lifetime limit and shutdown 1001 both ways.

Pings and pongs are relayed end to end, as nginx relays them: a client's ping
goes to the upstream and the upstream's pong, with the same payload, comes back
to the client; an upstream's ping goes to the client and the client's pong goes
back; unsolicited pongs pass too. Gatehouse answers no ping it relays, so each
side's keepalive checks the whole path. Gatehouse's own keepalive pings (the
server's to the client, the upstream client's to the upstream, every 20 s) are
answered on their hop and their pongs are not relayed.

ASGI carries no pings, so this needs the server's ``gatehouse.websocket.ping``
extension (Gatehouse's uvicorn protocol and its hypercorn stream offer it):

- the app takes it by sending ``{"type": "gatehouse.websocket.ping.relay"}``
  (before ``websocket.accept``); from then on the server answers no ping;
- the server passes each ping and pong frame as a receive event of type
  ``gatehouse.websocket.ping`` or ``gatehouse.websocket.pong``, with ``bytes``
  (its own keepalive's pongs excepted);
- the app sends ping and pong frames with send events of those types.

Without the extension (the app under a server Gatehouse did not configure)
nothing is relayed: the server answers the client's pings and the upstream
client answers the upstream's, as two separate hops. Pings do not count as
activity for ``idle_timeout``: keepalive pings would keep every idle socket open.

Control frames are bounded like messages: one at a time per direction is in
the relay's hands; at most ``MAX_PENDING_CONTROL`` from the upstream wait (more
are dropped), and the servers queue at most as many from the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.types import Receive, Send
from websockets.exceptions import ConnectionClosed
from websockets.frames import EXTERNAL_CLOSE_CODES, Opcode

from app.observability.metrics import WebSocketMetrics
from app.outbound.websocket import RelayingUpstreamConnection, UpstreamConnection

# The ASGI extension (and event type) for ping frames, the event type for pong frames, and the
# event that takes the extension (the server stops answering pings); see the module docstring.
PING_EXTENSION = "gatehouse.websocket.ping"
PONG_EVENT = "gatehouse.websocket.pong"
RELAY_CONTROL = "gatehouse.websocket.ping.relay"
CONTROL_EVENTS = {Opcode.PING: PING_EXTENSION, Opcode.PONG: PONG_EVENT}
# The ASGI extension (and send event type, with ``max_message_bytes``) that lowers the server's frame
# parser limit to the route's, so a larger frame is refused before it is buffered.
LIMIT_EXTENSION = "gatehouse.websocket.max_message_bytes"

NORMAL = 1000
GOING_AWAY = 1001
NO_STATUS = 1005
ABNORMAL = 1006
TOO_BIG = 1009
INTERNAL_ERROR = 1011


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """A route's WebSocket limits, as ``app.resilience.websocket`` resolves them."""

    max_message_bytes: int
    idle_timeout: float
    max_lifetime: float


@dataclass(slots=True)
class RelayOutcome:
    """How a relayed WebSocket ended, for the access log: who ended it, with which code, and the traffic."""

    ended_by: str = "gateway"  # "client", "upstream" or "gateway"
    close_code: int = ABNORMAL  # the code the client's side of the connection closed with
    reason: str = ""
    messages: dict[str, int] = field(default_factory=lambda: {"to_upstream": 0, "to_client": 0})
    bytes: dict[str, int] = field(default_factory=lambda: {"to_upstream": 0, "to_client": 0})


@dataclass(slots=True)
class _Ending:
    ended_by: str
    to_client: tuple[int, str] | None  # the close to send the client (None: the client already closed)
    to_upstream: tuple[int, str] | None


def sendable(code: int) -> int:
    """``code`` if it may be sent in a close frame, else the nearest that may (1005 and 1006 are never sent)."""
    if code in EXTERNAL_CLOSE_CODES or 3000 <= code < 5000:
        return code
    return NORMAL if code == NO_STATUS else INTERNAL_ERROR


def _size(payload: str | bytes) -> int:
    if isinstance(payload, str) and not payload.isascii():
        return len(payload.encode())
    return len(payload)


async def relay(
    receive: Receive,
    send: Send,
    upstream: UpstreamConnection,
    limits: RelayLimits,
    metrics: WebSocketMetrics,
    shutdown: Callable[[], Awaitable[None]],
) -> RelayOutcome:
    """Relay until either side closes, a limit is reached, or ``shutdown()`` returns; close both sides.

    Pings and pongs are relayed when ``upstream`` is a ``RelayingUpstreamConnection``
    (opened so because the server offers ``PING_EXTENSION``, taken before the accept).
    """
    outcome = RelayOutcome()
    started = last_activity = time.monotonic()
    ending: _Ending | None = None
    to_upstream_messages, to_client_messages = metrics.messages["to_upstream"], metrics.messages["to_client"]
    to_upstream_bytes, to_client_bytes = metrics.bytes["to_upstream"], metrics.bytes["to_client"]

    async with anyio.create_task_group() as tasks:

        def end(how: _Ending) -> None:
            nonlocal ending
            if ending is None:
                ending = how
            tasks.cancel_scope.cancel()

        async def client_to_upstream() -> None:
            nonlocal last_activity
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    text = message.get("text")
                    payload: str | bytes = text if text is not None else message.get("bytes") or b""
                    size = _size(payload)
                    if size > limits.max_message_bytes:
                        reason = "message too big"
                        end(_Ending("client", (TOO_BIG, reason), (TOO_BIG, reason)))
                        return
                    last_activity = time.monotonic()
                    try:
                        await upstream.send(payload)
                    except ConnectionClosed as exc:
                        end(_from_upstream(exc))
                        return
                    outcome.messages["to_upstream"] += 1
                    outcome.bytes["to_upstream"] += size
                    to_upstream_messages.inc()
                    to_upstream_bytes.inc(size)
                elif kind == PING_EXTENSION or kind == PONG_EVENT:
                    if isinstance(upstream, RelayingUpstreamConnection):
                        with contextlib.suppress(ConnectionClosed):  # the other pump reports the close
                            await upstream.send_control(
                                Opcode.PING if kind == PING_EXTENSION else Opcode.PONG, message["bytes"]
                            )
                elif kind == "websocket.disconnect":
                    code = message.get("code", NORMAL)
                    reason = message.get("reason") or ""
                    outcome.close_code, outcome.reason = code, reason
                    # A client that vanished without a close frame: the upstream hears "going away".
                    to_up = (GOING_AWAY, "client went away") if code == ABNORMAL else (sendable(code), reason)
                    end(_Ending("client", None, to_up))
                    return

        async def upstream_to_client() -> None:
            nonlocal last_activity
            while True:
                try:
                    payload = await upstream.recv()
                except ConnectionClosed as exc:
                    end(_from_upstream(exc))
                    return
                last_activity = time.monotonic()
                message: dict[str, Any] = {"type": "websocket.send"}
                message["text" if isinstance(payload, str) else "bytes"] = payload
                try:
                    await send(message)
                except OSError:  # uvicorn's ClientDisconnected: the receive side reports the close
                    return
                size = _size(payload)
                outcome.messages["to_client"] += 1
                outcome.bytes["to_client"] += size
                to_client_messages.inc()
                to_client_bytes.inc(size)

        async def watchdog() -> None:
            end_of_life = started + limits.max_lifetime
            while True:
                now = time.monotonic()
                if now >= end_of_life:
                    end(_gateway_close("connection lifetime limit reached"))
                    return
                idle_until = last_activity + limits.idle_timeout
                if now >= idle_until:
                    end(_gateway_close("idle timeout"))
                    return
                await anyio.sleep(min(end_of_life, idle_until) - now)

        async def on_shutdown() -> None:
            await shutdown()
            end(_gateway_close("the gateway is shutting down"))

        async def control_to_client(control: asyncio.Queue[tuple[Opcode, bytes]]) -> None:
            while True:
                opcode, payload = await control.get()
                try:
                    await send({"type": CONTROL_EVENTS[opcode], "bytes": payload})
                except OSError:
                    return

        if isinstance(upstream, RelayingUpstreamConnection):
            tasks.start_soon(control_to_client, upstream.control)
        tasks.start_soon(client_to_upstream)
        tasks.start_soon(upstream_to_client)
        tasks.start_soon(watchdog)
        tasks.start_soon(on_shutdown)

    assert ending is not None
    outcome.ended_by = ending.ended_by
    if ending.to_client is not None:
        code, reason = ending.to_client
        outcome.close_code, outcome.reason = code, reason
        try:
            await send({"type": "websocket.close", "code": code, "reason": reason})
        except (OSError, RuntimeError):
            pass  # the client is gone already, or closed first
    if ending.to_upstream is not None:
        code, reason = ending.to_upstream
        await upstream.close(code, reason)
    else:
        await upstream.close()
    return outcome


def _from_upstream(exc: ConnectionClosed) -> _Ending:
    """The client's close when the upstream's connection ended with ``exc``."""
    if exc.rcvd is not None:
        return _Ending("upstream", (sendable(exc.rcvd.code), exc.rcvd.reason), None)
    if exc.sent is not None and exc.sent.code == TOO_BIG:  # the upstream sent more than max_message_bytes
        return _Ending("upstream", (TOO_BIG, "message too big"), None)
    return _Ending("upstream", (INTERNAL_ERROR, "upstream connection lost"), None)


def _gateway_close(reason: str) -> _Ending:
    return _Ending("gateway", (GOING_AWAY, reason), (GOING_AWAY, reason))
