"""Gatehouse under hypercorn: HTTP/2 (h2c with prior knowledge, h2 over TLS by ALPN) and HTTP/1.1.

``http_server: hypercorn`` picks this server. hypercorn was chosen over granian
for HTTP/2 because it sends response trailers through ASGI (the
``http.response.trailers`` extension), which gRPC needs for ``grpc-status``; it
is pure Python, so it runs in Gatehouse's own event loop, where the drain flag,
SIGHUP reload and the reloading TLS context plug in as they do under uvicorn.
Its classes are subclassed here and installed where hypercorn looks them up
(three fixes, each explained on its class and proven by a test, to go when
hypercorn fixes it); the version is pinned below 0.19.

hypercorn has no header timeout or connection cap of its own;
``app.serving.hypercorn_limits`` adds both, so the ``server:`` block means the
same as under uvicorn, and ``drain_delay`` holds the listener open as there.
``run`` is one process; with ``gatehouse serve --workers N`` each worker runs it
on the socket the supervisor bound (``app.serving.workers``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import hypercorn.asyncio.run
import hypercorn.config
import hypercorn.events
import hypercorn.protocol
import hypercorn.protocol.h2
import hypercorn.protocol.h11
import hypercorn.protocol.ws_stream
from hypercorn.asyncio.run import worker_serve
from hypercorn.protocol.events import Request, StreamClosed
from hypercorn.protocol.ws_stream import FrameTooLargeError
from hypercorn.utils import wrap_app
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping, Pong
from wsproto.frame_protocol import CloseReason

from app.assembly.drain import Drain
from app.assembly.reload import Reloader
from app.config.settings import Settings
from app.config.tls import TlsSettings
from app.proxy.websocket import PING_EXTENSION, PONG_EVENT, RELAY_CONTROL
from app.serving.hypercorn_limits import Connections, LimitedTCPServer, ProblemH11Protocol
from app.serving.signals import drain_first
from app.serving.tls import CONNECTION_TLS, CertificateReloader

ALPN = ("h2", "http/1.1")


class ClientSendTimeout(ConnectionError):
    """An HTTP/2 client kept its flow-control window closed for longer than ``timeout.write``."""


class FlowControlledStreamBuffer(hypercorn.protocol.h2.StreamBuffer):
    """hypercorn's per-stream send buffer, with the backpressure HTTP/2 flow control implies, and a send timeout.

    hypercorn 0.18 releases a paused ``send`` on every ``pop`` that returns
    less than its low-water mark, including ``pop(0)`` when the client's
    flow-control window is closed. A client that opens streams and never sends
    WINDOW_UPDATE then made Gatehouse read its upstreams as fast as they wrote,
    into memory, without bound (180 MB in 1.5 s in
    tests/integration/test_http2_clients.py). Here ``send`` waits until the
    buffer is below the low-water mark, so a stream holds at most two frames.

    A ``send`` held longer than ``send_timeout`` (``timeout.write``) gives the
    stream up, so a client that keeps a connection open and never reads cannot
    hold the exchange (and its upstream connection) for longer than that.
    """

    send_timeout = 30.0

    async def push(self, data: bytes) -> None:
        if self._complete:
            raise hypercorn.protocol.h2.BufferCompleteError()
        self.buffer.extend(data)
        await self._is_empty.clear()
        if len(self.buffer) >= hypercorn.protocol.h2.BUFFER_HIGH_WATER:
            try:
                await asyncio.wait_for(self._paused.wait(), self.send_timeout)
            except TimeoutError:
                # Give up: the app's send raises (the gateway closes the upstream response), later
                # sends are dropped, and what is buffered stays unsent, so the client never sees the
                # stream end as if it were complete.
                self._complete = True
                await self._is_empty.set()
                raise ClientSendTimeout(f"the client took no data for {self.send_timeout}s") from None
            await self._paused.clear()

    async def pop(self, max_length: int) -> bytes:
        length = min(len(self.buffer), max_length)
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        if len(self.buffer) < hypercorn.protocol.h2.BUFFER_LOW_WATER:
            await self._paused.set()
        if not self.buffer:
            await self._is_empty.set()
        return data


class ClosingH2Protocol(hypercorn.protocol.h2.H2Protocol):
    """hypercorn's HTTP/2 protocol, releasing every stream's pending ``send`` when the connection closes.

    hypercorn 0.18 stops its sending task on close but leaves the streams'
    buffers as they are, so an app waiting for its last body bytes to go out
    waits for ever. A client that drops a connection with responses in flight
    (h2load at the end of a run; a browser leaving a page) then held one
    upstream connection per stream until the pool ran dry: after two h2load
    runs every request got 503.
    """

    async def handle(self, event: hypercorn.events.Event) -> None:
        await super().handle(event)
        if isinstance(event, hypercorn.events.Closed):
            for buffer in list(self.stream_buffers.values()):
                await buffer.close()


class WebSocketStream(hypercorn.protocol.ws_stream.WSStream):
    """hypercorn's WebSocket stream, telling the app the client's close code and reason, and relaying pings.

    The fix: hypercorn 0.18 answers a client's close frame and then reports the
    end of the stream to the app as ``websocket.disconnect`` with 1006 (abnormal
    closure) and no reason, whatever the frame said, so the relay could only
    tell the upstream 1001 "client went away" (uvicorn reports the frame's code
    and reason). Here the close frame is kept as it is read, and the disconnect
    carries its code and reason; a stream that ends without one is still 1006.

    The extension: ASGI has no pings; this stream offers Gatehouse's
    ``gatehouse.websocket.ping`` (``app.proxy.websocket``), as its uvicorn
    protocol does. Once the app has taken it, pings are not answered here and
    pings and pongs go to the app; a flood is bounded by hypercorn's queue to
    the app (``max_app_queue_size``, 10), which stops reading while it is full.
    hypercorn sends no keepalive pings of its own unless
    ``websocket_ping_interval`` is set, which Gatehouse does not do.
    """

    close_received: CloseConnection | None = None
    relays_control = False

    async def handle(self, event: hypercorn.protocol.events.Event) -> None:
        close = self.close_received
        if isinstance(event, StreamClosed) and close is not None and not self.closed and self.app_put is not None:
            self.closed = True
            await self.app_put({"type": "websocket.disconnect", "code": close.code, "reason": close.reason or ""})
            return
        await super().handle(event)
        if isinstance(event, Request) and self.app_put is not None:
            extensions: Any = self.scope["extensions"]  # the app's task is created, not yet started
            extensions[PING_EXTENSION] = {}

    async def app_send(self, message: Any) -> None:
        kind = message["type"] if message is not None else None
        if kind == RELAY_CONTROL:
            self.relays_control = True
        elif kind == PING_EXTENSION or kind == PONG_EVENT:
            if self.state == hypercorn.protocol.ws_stream.ASGIWebsocketState.CONNECTED and not self.closed:
                payload = bytes(message["bytes"])
                await self._send_wsproto_event(Ping(payload) if kind == PING_EXTENSION else Pong(payload))
        else:
            await super().app_send(message)

    async def _handle_events(self) -> None:
        # hypercorn 0.18's loop, with the close frame kept for ``handle`` and pings and pongs relayed.
        for event in self.connection.events():
            if isinstance(event, Message):
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    await self._send_wsproto_event(CloseConnection(code=CloseReason.MESSAGE_TOO_BIG))
                    break
                if event.message_finished:
                    assert self.app_put is not None
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, (Ping, Pong)) and self.relays_control:
                assert self.app_put is not None
                kind = PING_EXTENSION if isinstance(event, Ping) else PONG_EVENT
                await self.app_put({"type": kind, "bytes": bytes(event.payload)})
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                self.close_received = self.close_received or event
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))


# hypercorn looks these classes up in its modules when a connection or a stream opens, which is
# where they are installed: the one patch Gatehouse makes to a dependency (hypercorn is pinned
# below 0.19), to remove once hypercorn fixes them (tests/integration/test_http2_clients.py for
# the first two, tests/integration/test_websocket.py for the WebSocket stream).
hypercorn.protocol.h2.StreamBuffer = FlowControlledStreamBuffer  # type: ignore[misc]
hypercorn.protocol.H2Protocol = ClosingH2Protocol  # type: ignore[attr-defined]
hypercorn.protocol.h11.WSStream = WebSocketStream  # type: ignore[attr-defined]
hypercorn.protocol.h2.WSStream = WebSocketStream  # type: ignore[attr-defined]
# Not a fix but the ``server:`` limits hypercorn lacks (app.serving.hypercorn_limits).
hypercorn.asyncio.run.TCPServer = LimitedTCPServer  # type: ignore[attr-defined]
hypercorn.protocol.H11Protocol = ProblemH11Protocol  # type: ignore[attr-defined]


class HypercornConfig(hypercorn.config.Config):
    """hypercorn's config with Gatehouse's TLS context (renewed certificates) and its ``Server`` header."""

    def __init__(self, tls: TlsSettings | None = None) -> None:
        super().__init__()
        self.tls = tls
        self.include_server_header = False
        self.connections: Connections | None = None  # the ``server:`` limits (app.serving.hypercorn_limits)

    @property
    def ssl_enabled(self) -> bool:
        return self.tls is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return None if self.tls is None else CertificateReloader(self.tls, ALPN).context

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        return [*super().response_headers(protocol), (b"server", b"gatehouse")]


def hypercorn_config(settings: Settings, *, host: str, port: int) -> HypercornConfig:
    config = HypercornConfig(settings.tls)
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = settings.shutdown_grace
    FlowControlledStreamBuffer.send_timeout = settings.timeout.write  # one server per process
    config.keep_alive_timeout = settings.server.keepalive_timeout
    config.backlog = 2048  # uvicorn's default (hypercorn's is 100)
    config.connections = Connections(settings.server)
    config.h11_max_incomplete_size = max(settings.max_header_bytes * 2, 16 * 1024)
    config.h2_max_header_list_size = max(settings.max_header_bytes * 2, 2**16)
    config.accesslog = None  # Gatehouse writes its own access log
    config.errorlog = logging.getLogger("hypercorn.error")  # through Gatehouse's logging config
    config.loglevel = settings.log_level.upper()
    return config


def with_tls_extension(app: Any) -> Callable[[Any, Any, Any], Awaitable[None]]:
    """``app`` with the connection's TLS extension in each request's scope (see ``app.serving.tls``)."""

    async def serve(scope: Any, receive: Any, send: Any) -> None:
        tls = CONNECTION_TLS.get()
        if tls is not None and scope["type"] != "lifespan":
            scope["extensions"] = {**scope.get("extensions", {}), "tls": tls}
        await app(scope, receive, send)

    return serve


async def serve(
    app: Any,
    config: HypercornConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns, then drain for ``graceful_timeout``.

    ``sockets`` are already bound (tests bind port 0 and read it back); without
    them hypercorn binds ``config.bind``.
    """
    bound = None
    if sockets is not None:
        secure = config.ssl_enabled
        bound = hypercorn.config.Sockets(
            secure_sockets=list(sockets) if secure else [],
            insecure_sockets=[] if secure else list(sockets),
            quic_sockets=[],
        )
    wrapped = wrap_app(with_tls_extension(app), config.wsgi_max_body_size, "asgi")
    await worker_serve(wrapped, config, sockets=bound, shutdown_trigger=shutdown_trigger)


def run(
    app: Any,
    config: HypercornConfig,
    drain: Drain,
    reloader: Reloader,
    drain_delay: float = 0.0,
    *,
    sockets: list[socket.socket] | None = None,
    on_serving: Callable[[], None] | None = None,
) -> None:
    """``gatehouse serve`` under hypercorn: SIGTERM/SIGINT drain and stop, SIGHUP reloads the config file.

    As under uvicorn (``app.serving.signals``), the listener stays open ``drain_delay``
    seconds after the first signal, with ``/readyz`` answering 503; a second signal stops at once.
    ``sockets``: bound already (a ``--workers`` process gets its supervisor's); ``on_serving``
    is called once they listen, after the app's start-up.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        reloads: set[asyncio.Task[None]] = set()
        on_stop = drain_first(lambda _signum, _frame: loop.call_soon_threadsafe(stop.set), drain, drain_delay)

        def on_reload() -> None:
            task = asyncio.create_task(reloader.reload_logged())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        async def serving_until_stopped() -> None:
            # hypercorn awaits its shutdown trigger once the lifespan has started and every listener is open.
            if on_serving is not None:
                on_serving()
            await stop.wait()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop, sig, None)
        if hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, on_reload)
        await serve(app, config, shutdown_trigger=serving_until_stopped, sockets=sockets)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        asyncio.run(main())
    else:
        uvloop.run(main())
