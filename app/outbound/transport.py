"""An ``httpx`` transport over aiohttp's HTTP/1.1 connection pool.

The shared clients stay ``httpx.AsyncClient`` (its Timeout, Limits, Auth, event
hooks and MockTransport are what users and tests program against); only the
HTTP/1.1 wire work moves to aiohttp, whose C-accelerated parser and pool make
the whole gateway several times faster than on httpcore at 64 concurrent
requests (``gatehouse`` vs ``gatehouse-httpcore`` in bench/README.md).
``upstream_transport: httpcore`` switches back; HTTP/2 routes always use
``httpx.AsyncHTTPTransport``.

What this transport guarantees, and the published ``httpx-aiohttp`` adapter
does not: the upstream sees only the headers it is given (aiohttp adds no
User-Agent, Accept, Accept-Encoding or Content-Type), no cookie is ever kept,
the request target is sent byte for byte, ``pool`` is a real pool-wait timeout
(``httpx.PoolTimeout``), and aiohttp errors map to the httpx exception that
says what happened (a reset mid-body is a ``ReadError``, not a connect timeout),
and no request is resent behind the gateway's back.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable
from functools import lru_cache
from typing import Any, ClassVar, Literal

import aiohttp
import httpx
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict

from app.outbound.fastpath import build_response
from app.outbound.urls import yarl_url

# aiohttp adds these unless told not to; a proxy must not.
_SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
# The same names as the request reads them (only looked up, never changed: one for all requests).
_SKIPPED: CIMultiDict[None] = CIMultiDict((name, None) for name in sorted(_SKIP_AUTO_HEADERS))


class map_aiohttp_errors:  # noqa: N801 (used as a function: ``with map_aiohttp_errors(): ...``)
    """Translate aiohttp's exceptions to the httpx ones that say the same thing (``httpx_error``)."""

    __slots__ = ("_reading",)

    def __init__(self, *, reading: bool = False) -> None:
        self._reading = reading

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is not None and (error := httpx_error(exc, reading=self._reading)) is not None:
            raise error from exc


def httpx_error(exc: BaseException, *, reading: bool) -> httpx.TransportError | None:
    """The httpx error that says what aiohttp's ``exc`` says, or None to let it through.

    The hot path calls it from an ``except`` rather than entering ``map_aiohttp_errors``:
    a ``try`` costs nothing until something is raised, a ``with`` two method calls.
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc) or "timed out connecting to the upstream")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(str(exc) or "timed out reading from the upstream")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc))
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(exc) or "upstream closed the connection")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.ReadError(str(exc) or "upstream response body was cut short")
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(str(exc) or "invalid response from the upstream")
    if isinstance(exc, (aiohttp.ClientOSError, aiohttp.ClientConnectionError)):
        error = httpx.ReadError if reading else httpx.WriteError
        return error(str(exc) or "connection to the upstream failed")
    if isinstance(exc, aiohttp.ClientError):
        return httpx.TransportError(str(exc) or type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout("timed out waiting for the upstream")
    return None


class _Body:
    """The upstream's response body as it arrives; a class, not an async generator.

    A body with a Content-Length is handed on one received piece at a time
    (``readchunk``), as aiohttp's parser produced it: ``readany`` would join
    every piece buffered so far into a new ``bytes``, a copy of most of a large
    body (8% of the proxy's samples on 1 MiB responses). Chunked and
    close-delimited bodies still take all that is buffered at once, so that many
    small HTTP chunks go on as one write. Being a plain iterator, it also skips
    the event loop's async-generator bookkeeping (a ``WeakSet`` entry per response).
    """

    __slots__ = ("_content", "_pieces")

    def __init__(self, content: aiohttp.StreamReader, *, pieces: bool) -> None:
        self._content = content
        self._pieces = pieces

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            if self._pieces:
                chunk, _ = await self._content.readchunk()  # (b"", False) at the end
            else:
                chunk = await self._content.readany()
        except BaseException as exc:
            if (error := httpx_error(exc, reading=True)) is None:
                raise
            raise error from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, slots: _Slots) -> None:
        self._response = response
        self._slots = slots
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        response = self._response
        return _Body(response.content, pieces="Content-Length" in response.headers)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        response = self._response
        # A fully read body hands the connection back to the pool; anything else closes it.
        if response.content.is_eof():
            # aiohttp closes a response itself when its body ends, the connection back in the pool
            # (``ClientResponse._response_eof``); ``release()`` would then only mark the spent
            # body as failed, through an ``asyncio.isfuture`` whose failed ``hasattr`` builds an
            # ``AttributeError``: 4k instructions a request for nothing.
            if not response.closed:
                response.release()
        else:
            response.close()
        self._slots.release()


class _Handoff:
    """The fields of the request the transport is handing to aiohttp, until its request takes them."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: CIMultiDict[str] | None = None


class _ForwardedRequest(aiohttp.ClientRequest):
    """aiohttp's request, sending the fields it is given as they are, in their order.

    aiohttp has no way to take a request's headers as final. ``ClientSession._request``
    merges them into a new ``CIMultiDict`` (``_prepare_headers``), which also folds a repeated
    name spelt in another case (``set-cookie`` then ``Set-Cookie``) into one field, dropping the
    first; ``update_headers`` copies them again behind a ``Host`` built from the URL, and
    ``update_auto_headers`` sorts the skipped names into another, copies the headers once more
    to look names up in, and checks each default header, only to add nothing, as this
    transport skips all of them. So the transport hands the session no headers, and this
    request takes the transport's ``CIMultiDict`` from its ``handoff``. aiohttp builds the
    request before ``_request`` first suspends (no traces, no ``trust_env``), so no other
    request can come between handing the fields over and their being taken; the transport
    checks that (a URL will not do as a key: yarl caches URL objects by their parts). Given
    no ``Host``, or more than one, aiohttp's own rule applies (the URL's, or the last given,
    sent first). ``tests/integration/test_fastpath.py`` pins the bytes on the wire.
    """

    # Replaced per transport by a subclass with its own (``AiohttpTransport.__init__``).
    handoff: ClassVar[_Handoff]

    def update_headers(self, headers: LooseHeaders | None) -> None:  # noqa: ARG002
        handoff = self.handoff
        given, handoff.fields = handoff.fields, None
        if given is None:
            # A request aiohttp builds a second time (a resend, which ``_retry_connection = False``
            # turns off) would go without the forwarded fields: refused, never sent bare.
            raise RuntimeError("aiohttp built a request with no forwarded fields handed to it")
        if len(given.getall("Host", ())) == 1:
            self.headers = given
        else:
            super().update_headers(given)

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:  # noqa: ARG002
        # ``skip_auto_headers`` is the session's, always ``_SKIP_AUTO_HEADERS``: no header is added.
        self._skip_auto_headers = _SKIPPED


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to one upstream origin through an ``aiohttp`` connection pool."""

    def __init__(self, *, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limits = limits
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None
        # Held from request start until the response body is closed: the pool's size.
        self._slots = _Slots(limits.max_connections or 1_000_000)
        self._handoff = _Handoff()  # see ``_ForwardedRequest``
        self._request_class = type("_ForwardedRequest", (_ForwardedRequest,), {"handoff": self._handoff})

    def _open_session(self) -> aiohttp.ClientSession:
        connector = _KeepaliveCappedConnector(
            max_keepalive=self._limits.max_keepalive_connections,
            limit=0,  # the semaphore above is the limit, so waits are timed as pool waits
            limit_per_host=0,
            keepalive_timeout=self._limits.keepalive_expiry or 0.0001,
            ssl=self._ssl,
            enable_cleanup_closed=False,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            request_class=self._request_class,
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
        )
        # aiohttp silently resends an idempotent request once when the upstream drops the
        # connection, even a fresh one: that doubles attempts behind the route's retry
        # policy and budget. Retries are the gateway's decision (app.resilience.endpoint).
        session._retry_connection = False
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None:
            session = self._session = self._open_session()
        timeouts = request.extensions.get("timeout", {})
        if not self._slots.take_free():  # else wait, without a coroutine when one is free
            await self._acquire_slot(timeouts.get("pool"))
        # From httpx's own (name as sent, lower-case name, value) list (``fastpath.raw_headers``
        # builds it): ``Headers.raw`` would copy it into a new list first. A list, not a
        # generator: CIMultiDict builds from it in C.
        fields = request.headers._list
        headers = CIMultiDict([(k.decode("latin-1"), v.decode("latin-1")) for k, _, v in fields])
        # httpx frames the body itself; aiohttp re-frames from the headers it is given.
        chunked = headers.pop("Transfer-Encoding", None) is not None
        body: AsyncIterator[bytes] | None = None
        if chunked or "Content-Length" in headers:
            body = request.stream  # type: ignore[assignment]
        url = yarl_url(request.url)
        handoff = self._handoff
        if handoff.fields is not None:  # never, unless aiohttp suspends before building its request
            self._slots.release()
            raise RuntimeError("aiohttp did not take the previous request's fields before this request")
        handoff.fields = headers
        try:
            # ``request`` only wraps ``_request`` in a context manager that ``await`` unwraps
            # again, built through a typing generic alias (its ``__call__`` tries and fails to set
            # ``__orig_class__``): 15k instructions a request (tests/unit/test_outbound.py pins it).
            response = await session._request(
                request.method,
                url,
                headers=None,  # ``headers`` go by the handoff (see ``_ForwardedRequest``)
                data=body,
                chunked=True if chunked else None,
                allow_redirects=False,
                compress=None,
                timeout=_client_timeout(timeouts.get("connect"), timeouts.get("read")),
            )
        except BaseException as exc:
            handoff.fields = None  # failed before its request took them, if it did
            self._slots.release()
            if (error := httpx_error(exc, reading=False)) is None:
                raise
            raise error from exc
        # aiohttp's parser has validated the fields; httpx need not re-encode and re-check them.
        return build_response(
            response.status,
            response.raw_headers,
            _ResponseStream(response, self._slots),
            request,
            {"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def _acquire_slot(self, pool_timeout: float | None) -> None:
        try:
            await asyncio.wait_for(self._slots.acquire(), pool_timeout)
        except TimeoutError:
            raise httpx.PoolTimeout(
                f"no free connection to the upstream within {pool_timeout} s "
                f"(all {self._limits.max_connections} in use)"
            ) from None

    @property
    def in_use(self) -> int:
        """Connections currently held by open exchanges (0 when nothing leaks)."""
        return self._slots.in_use

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@lru_cache(maxsize=64)
def _client_timeout(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    """One ``ClientTimeout`` per pair of timeouts (a route's are fixed), not one per request."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


class _KeepaliveCappedConnector(aiohttp.TCPConnector):
    """A connector that keeps at most ``max_keepalive`` idle connections (``None``: no cap).

    aiohttp keeps every released connection until ``keepalive_timeout``; it has no cap on idle
    ones, which httpx's ``Limits.max_keepalive_connections`` promises (httpcore honours it). After
    a burst of 64 the pool held 64 idle upstream sockets. Past the cap, a released connection is
    closed instead of kept. ``_release`` is aiohttp's private hook (3.10-3.14 share its signature);
    ``test_the_aiohttp_transport_keeps_at_most_max_keepalive_connections_idle`` catches a change.
    """

    def __init__(self, *, max_keepalive: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_keepalive = max_keepalive

    def _release(self, key: Any, protocol: Any, *, should_close: bool = False) -> None:
        if self._max_keepalive is not None and not should_close:
            should_close = sum(map(len, self._conns.values())) >= self._max_keepalive
        super()._release(key, protocol, should_close=should_close)


class _Slots(asyncio.Semaphore):
    """A semaphore that also counts what is held, for pool accounting."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.in_use = 0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.in_use += 1
        return True

    def take_free(self) -> bool:
        """Take a slot if one is free and nobody waits for one, without suspending; else ``False``.

        What ``acquire`` does on its fast path, without its coroutine and ``locked()``'s
        generator scan of the waiters: 5k instructions a request. It reads the Semaphore's
        own state (``_value``, ``_waiters``; the same from Python 3.10 to 3.13), so
        ``tests/unit/test_outbound.py`` checks it against ``locked()``.
        """
        if self._value > 0 and not self._waiters:
            self._value -= 1
            self.in_use += 1
            return True
        return False

    def release(self) -> None:
        self.in_use -= 1
        super().release()
