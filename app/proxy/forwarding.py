"""Send an exchange upstream and stream the answer back (the I/O seam).

Bodies stream both ways: the client's body is read from ASGI ``receive`` as
the upstream takes it, and the upstream's response is relayed chunk by chunk
without decoding. The upstream response is closed in a ``finally`` on every
path: success, upstream error, and a client that goes away mid-stream (which
uvicorn does not report through ``send``, so a watcher listens for it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter_ns

import httpx
from starlette.types import Receive, Send

from app.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from app.outbound.fastpath import body_chunks, build_request, close_response, release, request_auth, stream_chunks
from app.proxy.body import ClientDisconnected
from app.proxy.exchange import Exchange
from app.proxy.headers import client_response_headers
from app.proxy.urls import rewrite_location

log = logging.getLogger("gatehouse.proxy")


class map_upstream_errors:  # noqa: N801 (used as a function: ``with map_upstream_errors(route): ...``)
    """The one place httpx's exceptions become gateway errors (``upstream_error`` says how)."""

    __slots__ = ("_route",)

    def __init__(self, route: str) -> None:
        self._route = route

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is not None and isinstance(exc, httpx.TransportError):
            raise upstream_error(exc, self._route) from exc


def upstream_error(exc: httpx.TransportError, route: str) -> UpstreamError:
    """The gateway error for an httpx transport error (``kind`` says which, for the metrics).

    The hot path calls it from an ``except`` rather than entering ``map_upstream_errors``:
    a ``try`` costs nothing until something is raised, a ``with`` two method calls.
    """
    if isinstance(exc, httpx.PoolTimeout):
        return _kind(
            UpstreamUnavailable(
                f"Route {route!r}: no upstream connection became free in time.",
                headers=[(b"retry-after", b"1")],
            ),
            "pool",
        )
    if isinstance(exc, httpx.TimeoutException):
        what = {
            httpx.ConnectTimeout: "connecting to",
            httpx.ReadTimeout: "reading from",
            httpx.WriteTimeout: "writing to",
        }.get(type(exc), "waiting for")
        return _kind(UpstreamTimeout(f"Route {route!r}: timed out {what} the upstream."), "timeout")
    if isinstance(exc, httpx.ConnectError):
        return _kind(UpstreamError(f"Route {route!r}: could not connect to the upstream."), "connect")
    return _kind(UpstreamError(f"Route {route!r}: the upstream connection failed ({type(exc).__name__})."), "reset")


def _kind(error: UpstreamError, kind: str) -> UpstreamError:
    error.kind = kind
    return error


def send_upstream(exchange: Exchange) -> Awaitable[httpx.Response]:
    """The pipeline's last stage: send the request, return the streaming response.

    It returns ``send_request``'s coroutine rather than awaiting it: one frame less in the
    chain that every resumption of the request's task passes through, both ways.
    """
    assert exchange.client is not None, "the gateway sets the route's client on the plain path"
    return send_request(exchange, exchange.client, exchange.url, exchange.headers, exchange.body)


async def send_request(
    exchange: Exchange,
    client: httpx.AsyncClient,
    url: httpx.URL,
    headers: list[tuple[bytes, bytes]],
    body: httpx.AsyncByteStream | None,
) -> httpx.Response:
    """Send one attempt of ``exchange`` (to ``url`` through ``client``); map httpx errors.

    A failure caused by the client's own body (too large, disconnected) is
    raised as that, not as an upstream error.
    """
    route = exchange.route
    metrics = exchange.metrics
    exchange.attempts += 1
    if exchange.attempts > 1 and metrics is not None:
        metrics.retries.inc()
    span = None
    if exchange.span is not None:
        assert exchange.tracer is not None
        span = exchange.tracer.client_span(exchange.span, exchange.method, url, exchange.attempts)
        parent = exchange.tracer.traceparent(span)
        headers = [(b"traceparent", parent) if name == b"traceparent" else (name, value) for name, value in headers]
    request = build_request(exchange.method, url, headers, body, {"timeout": route.timeout_extension})
    started = perf_counter_ns()
    try:
        try:
            auth = exchange.upstream_auth
            if auth is None:
                auth = request_auth(client, url)
            if auth is None:
                response = await client.send(request, stream=True)
            else:
                response = await client.send(request, stream=True, auth=auth)
        except httpx.TransportError as exc:
            raise upstream_error(exc, route.name) from exc
    except (GatewayError, ClientDisconnected) as exc:
        if isinstance(exc, UpstreamError) and exc.kind is not None and metrics is not None:
            metrics.errors[exc.kind].inc()
        if span is not None:
            assert exchange.tracer is not None
            kind = exc.kind if isinstance(exc, UpstreamError) else None
            exchange.tracer.end_client(span, None, kind or type(exc).__name__)
        failure = exchange.body.failure() if exchange.body is not None else None
        if failure is not None and failure is not exc:
            raise failure from exc
        raise
    elapsed = exchange.upstream_ns = perf_counter_ns() - started
    if metrics is not None:
        metrics.upstream_duration.observe(elapsed / 1e9)
    if span is not None:
        assert exchange.tracer is not None
        exchange.tracer.end_client(span, response.status_code, http_version=response.http_version)
    return response


class WatchedStream(httpx.AsyncByteStream):
    """A response body that reports how it ended: ``on_close`` runs exactly once.

    ``on_error`` sees a transport error raised while the body streams (the
    upstream failed mid-response). Closing runs ``on_close`` even if closing
    the inner stream is interrupted, so counters and slots never leak.
    """

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        on_close: Callable[[], None],
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._inner = inner
        self._on_close: Callable[[], None] | None = on_close
        self._on_error = on_error

    def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = stream_chunks(self._inner)
        return chunks if self._on_error is None else _WatchedChunks(chunks, self._on_error)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


class _WatchedChunks:
    """``WatchedStream``'s iterator when it reports errors: a plain object, not an async generator.

    An async generator here was one more generator per response, with the event
    loop's hooks and a second ``__anext__`` per chunk (as ``body_chunks`` avoids for httpx's).
    """

    __slots__ = ("_chunks", "_on_error")

    def __init__(self, chunks: AsyncIterator[bytes], on_error: Callable[[Exception], None]) -> None:
        self._chunks = chunks
        self._on_error = on_error

    def __aiter__(self) -> _WatchedChunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except httpx.TransportError as exc:
            self._on_error(exc)
            raise

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def watch_response(
    response: httpx.Response,
    on_close: Callable[[], None],
    on_error: Callable[[Exception], None] | None = None,
) -> httpx.Response:
    """Have ``on_close`` run when ``response`` is closed (``relay_response`` always closes it)."""
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    response.stream = WatchedStream(stream, on_close, on_error)
    return response


async def relay_response(exchange: Exchange, response: httpx.Response, send: Send, receive: Receive) -> int:
    """Stream ``response`` to the client and close it, whatever happens; returns the body bytes sent."""
    route = exchange.route
    sent = 0
    try:
        outbound = client_response_headers(response.headers.raw, route.headers, exchange.request_id)
        headers = outbound.headers
        if outbound.has_location:  # 3xx and 201 Created alike, as nginx's proxy_redirect
            headers = _rewrite_locations(headers, exchange)
        held: list[tuple[bytes, bytes]] = []
        if exchange.trailers:
            headers, held = _split_trailers_only(headers)
        start = {"type": "http.response.start", "status": response.status_code, "headers": headers}
        if exchange.trailers:
            start["trailers"] = True
        await send(start)
        chunks = body_chunks(response)
        try:
            try:
                first = await _next(chunks)
            except httpx.TransportError as exc:
                raise upstream_error(exc, route.name) from exc
            if first is None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                await _send_trailers(exchange, response, send, held)
                return 0
            sent = len(first)
            length = outbound.content_length
            if length is not None and sent >= length and not exchange.trailers:
                await send({"type": "http.response.body", "body": first, "more_body": False})
                return sent
            await send({"type": "http.response.body", "body": first, "more_body": True})
            # More to come: from here on the client may leave while we wait upstream.
            # (Only once the request body is read: ``receive`` has one reader at a time.)
            watch = exchange.body is None or exchange.body.finished
            counter = [sent]
            end = length if not exchange.trailers else None
            try:
                ended = await _relay_rest(chunks, send, receive if watch else None, route.name, counter, end)
            finally:
                sent = counter[0]
            if ended is _OPEN:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                await _send_trailers(exchange, response, send, held)
            elif ended is _LEFT:
                log.info("client disconnected mid-stream", extra={"route": route.name})
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
    except UpstreamError as exc:
        # The status line is gone: all we can do is cut the response short.
        if exc.kind is not None and exchange.metrics is not None:
            exchange.metrics.errors[exc.kind].inc()
        log.warning(
            "upstream failed mid-response: %s",
            exc.detail,
            extra={"route": route.name, "request_id": exchange.request_id.decode()},
        )
    finally:
        await close_response(response)
        release(response)  # freed now, not by the cyclic GC (app.outbound.fastpath)
    return sent


async def _send_trailers(
    exchange: Exchange, response: httpx.Response, send: Send, held: list[tuple[bytes, bytes]]
) -> None:
    """The upstream's trailers (``grpc-status``...), when the client takes them; none if the transport kept none."""
    if not exchange.trailers:
        return
    from app.outbound.http2 import response_trailers  # here: h2 loads only when a client takes trailers

    trailers = response_trailers(response)
    fields = held + (trailers() if trailers is not None else [])
    await send({"type": "http.response.trailers", "headers": fields, "more_trailers": False})


_KEPT_IN_HEADERS = frozenset({b"content-type", b"x-request-id", b"date", b"server"})


def _split_trailers_only(
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """A gRPC "trailers-only" answer (``grpc-status`` in its one HEADERS frame): its metadata moves to the trailers.

    The server announced trailers to the client, so the status must come in
    them; in a trailers-only answer all metadata is trailing metadata.
    """
    if not any(name == b"grpc-status" for name, _ in headers):
        return headers, []
    kept = [(n, v) for n, v in headers if n in _KEPT_IN_HEADERS]
    return kept, [(n, v) for n, v in headers if n not in _KEPT_IN_HEADERS]


# How ``_relay_rest`` left the response: ended by its last piece, still open (the upstream's
# end seen, the closing message not sent), or abandoned because the client left.
_ENDED, _OPEN, _LEFT = "ended", "open", "left"


async def _relay_rest(
    chunks: AsyncIterator[bytes], send: Send, receive: Receive | None, route: str, sent: list[int], end: int | None
) -> str:
    """Relay remaining chunks, adding their size to ``sent[0]``; ``_ENDED``, ``_OPEN`` or ``_LEFT``.

    The piece that brings ``sent[0]`` to ``end`` (the Content-Length) goes with ``more_body``
    false: the response ends with it, without a closing empty message.

    With ``receive``, a watcher task cancels this one if the client leaves (uvicorn's ``send``
    says nothing of it). Plain asyncio, as ``asyncio.timeout`` does it: an anyio ``CancelScope``
    cost 3.8 us a response to enter and leave. The watcher runs only while this task waits at
    an ``await`` in the loop, so its cancel always lands there; one from anywhere else (server
    shutdown, an outer timeout) is told apart by the task's cancel count, and still raised.
    """
    watcher = task = None
    cancelling = 0
    left = _Left()
    if receive is not None and (task := asyncio.current_task()) is not None:
        cancelling = task.cancelling()
        watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(receive, task, left))
    try:
        with map_upstream_errors(route):
            async for chunk in chunks:
                total = sent[0] + len(chunk)
                if end is not None and total >= end:
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                    sent[0] = total
                    return _ENDED
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent[0] = total
    except asyncio.CancelledError:
        if task is None or not left.flag or task.uncancel() > cancelling:
            raise
        return _LEFT
    finally:
        if watcher is not None:
            watcher.cancel()
    return _OPEN


class _Left:
    __slots__ = ("flag",)

    def __init__(self) -> None:
        self.flag = False


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[object], left: _Left) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            left.flag = True
            task.cancel()
            return


async def _next(chunks: AsyncIterator[bytes]) -> bytes | None:
    async for chunk in chunks:
        if chunk:
            return chunk
    return None


def _rewrite_locations(headers: list[tuple[bytes, bytes]], exchange: Exchange) -> list[tuple[bytes, bytes]]:
    route = exchange.route
    out = []
    for name, value in headers:
        if name == b"location":
            rewritten = rewrite_location(
                value.decode("latin-1"),
                origin=route.upstream.origin,
                base_path=route.upstream.base_path,
                prefix=route.prefix,
                strip_prefix=route.strip_prefix,
            )
            if rewritten is not None:
                value = rewritten.encode("latin-1")
        out.append((name, value))
    return out
