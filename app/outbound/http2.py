"""HTTP/2 to upstreams, with what httpcore 1.0's HTTP/2 connection lacks for gRPC.

- **Trailers.** httpcore drops the HEADERS frame that ends a response
  (h2's ``TrailersReceived``), so ``grpc-status`` and ``grpc-message`` never
  reached the client. Here they are kept per stream and exposed as
  ``response.extensions["trailers"]``: a callable returning the trailer
  fields, complete once the body has been read to its end.
- **Full duplex.** httpcore sends the whole request body before it reads the
  response. A bidirectional call whose client waits for each reply before it
  sends the next message (ping-pong) then stalls for ever: the request body
  never ends. Here the body is sent by a task of its own while the response
  is read, and a failure of either side ends the other.
- **Early close.** A response closed before its end resets the stream
  (RST_STREAM CANCEL) so the upstream stops too; httpcore only forgets it.

These are subclasses of httpcore's public connection classes, overriding
its underscored hooks; httpcore is pinned by httpx's ``<0.29``. Remove them
when httpcore does the same (tests/integration/test_grpc.py says whether it does).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any

import h2.errors
import h2.events
import h2.exceptions
import httpcore
import httpx

Trailers = list[tuple[bytes, bytes]]


def _has_body(request: httpcore.Request) -> bool:
    return any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in request.headers)


class DuplexHTTP2Connection(httpcore.AsyncHTTP2Connection):
    """httpcore's HTTP/2 connection, keeping trailers and sending the request body beside the response."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trailers: dict[int, Trailers] = {}
        self._bodies: dict[int, tuple[asyncio.Task[None], httpcore.Request]] = {}

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        response = await super().handle_async_request(request)
        stream_id = response.extensions["stream_id"]
        trailers = self._trailers.setdefault(stream_id, [])
        response.extensions["trailers"] = lambda: list(trailers)
        return response

    async def _send_request_body(self, request: httpcore.Request, stream_id: int) -> None:
        if not _has_body(request):
            return
        task = asyncio.ensure_future(super()._send_request_body(request, stream_id))
        self._bodies[stream_id] = (task, request)

    async def _receive_stream_event(self, request: httpcore.Request, stream_id: int) -> Any:
        body = self._bodies.get(stream_id)
        if body is None:
            return await super()._receive_stream_event(request, stream_id)
        sending = body[0]
        if sending.done():
            sending.result()  # raises what failed the request body
            return await super()._receive_stream_event(request, stream_id)
        receiving = asyncio.ensure_future(super()._receive_stream_event(request, stream_id))
        try:
            await asyncio.wait({receiving, sending}, return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                sending.result()  # the body ended first: raise its failure, if it failed
            return await receiving
        finally:
            if not receiving.done():
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiving

    async def _read_incoming_data(self, request: httpcore.Request) -> list[h2.events.Event]:
        events = await super()._read_incoming_data(request)
        for event in events:
            if isinstance(event, h2.events.TrailersReceived) and event.stream_id in self._events:
                assert event.headers is not None
                trailers = self._trailers.setdefault(event.stream_id, [])
                trailers.extend((bytes(k), bytes(v)) for k, v in event.headers)
        return events

    async def _response_closed(self, stream_id: int) -> None:
        body = self._bodies.pop(stream_id, None)
        self._trailers.pop(stream_id, None)
        if body is not None:
            sending, request = body
            if not sending.done():
                sending.cancel()
            with contextlib.suppress(BaseException):
                await sending  # retrieved here: its failure was raised to the reader, or does not matter now
            stream = self._h2_state.streams.get(stream_id)
            if stream is not None and not stream.closed:
                with contextlib.suppress(h2.exceptions.ProtocolError, httpcore.NetworkError):
                    self._h2_state.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                    await self._write_outgoing_data(request)
        await super()._response_closed(stream_id)


class DuplexHTTPConnection(httpcore.AsyncHTTPConnection):
    """httpcore's connection, making a ``DuplexHTTP2Connection`` where it would make its own HTTP/2 connection."""

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        try:
            async with self._request_lock:
                if self._connection is None:
                    stream = await self._connect(request)
                    ssl_object = stream.get_extra_info("ssl_object")
                    negotiated = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"
                    if negotiated or (self._http2 and not self._http1):
                        self._connection = DuplexHTTP2Connection(
                            origin=self._origin, stream=stream, keepalive_expiry=self._keepalive_expiry
                        )
                    else:
                        self._connection = httpcore.AsyncHTTP11Connection(
                            origin=self._origin, stream=stream, keepalive_expiry=self._keepalive_expiry
                        )
        except BaseException:
            self._connect_failed = True
            raise
        return await self._connection.handle_async_request(request)


class DuplexConnectionPool(httpcore.AsyncConnectionPool):
    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        return DuplexHTTPConnection(
            origin=origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry,
            http1=self._http1,
            http2=self._http2,
            network_backend=self._network_backend,
        )


class HTTP2Transport(httpx.AsyncHTTPTransport):
    """httpx's transport over a ``DuplexConnectionPool``: HTTP/2 by ALPN over TLS, with prior knowledge without."""

    def __init__(self, *, https: bool, ssl_context: ssl.SSLContext | None, limits: httpx.Limits) -> None:
        super().__init__(http1=https, http2=True, limits=limits, verify=ssl_context or True, trust_env=False)
        self._pool = DuplexConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=https,
            http2=True,
        )


def response_trailers(response: httpx.Response) -> Callable[[], Trailers] | None:
    """The trailers of ``response`` once its body is read (``None``: its transport does not keep them)."""
    trailers: Callable[[], Trailers] | None = response.extensions.get("trailers")
    return trailers
