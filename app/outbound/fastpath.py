"""Around ``httpx.AsyncClient.send``: the per-request costs of httpx that a proxy need not pay.

Every forwarded request still goes through the route's shared client and its
``send`` (limits, timeouts, transports, ``Auth``, event hooks and mock
transports all apply). These helpers only change how the request is built
before ``send`` and what is left behind after the response is closed. Each
works around one httpx 0.28 behaviour, is pinned by
``tests/unit/test_fastpath.py``, and can go when httpx changes:

``release``
    ``AsyncClient.send`` wraps the body in a ``BoundAsyncStream`` that points
    back at its response (to set ``elapsed`` on close), and the response points
    at the stream: a reference cycle, so every proxied response, its transport
    objects and buffers wait for the cyclic garbage collector. Under load that
    was the largest single cost (7% of samples in the collector, +17% req/s and
    p99 24 -> 14 ms once released). After the response is closed its stream is
    spent; pointing ``response.stream`` at an empty stream breaks the cycle, so
    reference counting frees it all at once.

``build_request``
    ``httpx.Request(...)`` without a body stream runs ``encode_request`` and
    then ``_prepare``, which normalises every header a second time into a new
    ``Headers`` (7.7 us per request, against 0.7 us for headers that are already
    lower-case bytes, as the gateway's are). This builds the same request, with
    the same automatic ``Host`` and ``Content-Length: 0`` httpx would add, from
    headers normalised once, and sets what ``Request.__init__`` would set
    without copying the (immutable) URL into a new ``URL``, the new headers into
    another ``Headers`` or the caller's fresh extensions into another dict
    (1.5 us more per request).

``build_response``
    ``httpx.Response(...)`` given a stream copies the headers it is given into
    another ``Headers`` and the extensions into another dict, past a dozen
    keyword defaults. A transport's response is fresh; this sets the same
    attributes on it as they are (0.6 us per response).

``body_chunks``
    ``send(stream=True)`` wraps the transport's stream in a ``BoundAsyncStream``
    whose ``__aiter__`` is an async generator that only re-yields the inner
    stream's chunks: a generator object, a second ``__anext__`` per chunk, and
    the event loop's async-generator hooks (a ``WeakSet`` entry added on first
    iteration and removed when it is finalised) per response. Iterating the
    inner stream gives the same bytes; ``response.aclose()`` still goes through
    ``BoundAsyncStream.aclose`` (``elapsed`` set, the inner stream closed).

``request_auth``
    With no ``Auth`` on the client or the request and no userinfo in the URL,
    ``send`` makes a fresh ``httpx.Auth()`` per request (after unquoting the
    URL's user name and password to find none) and drives its flow: an async
    generator around a generator, whose only work is to hand the request back
    once. ``NO_AUTH`` is an ``Auth`` whose flow does the same as a plain object.
    ``send`` still drives it (``__anext__``, ``asend``, ``aclose``); a client's
    own ``auth``, a route's upstream credentials and URL userinfo still win.

``close_response``
    ``Response.aclose`` closes the stream inside ``request_context``, a
    ``@contextlib.contextmanager`` (a generator, a context-manager object and
    two more frames per response) whose only work is to attach the request to
    a ``RequestError`` raised while closing. This does the same with a
    ``try``/``except``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any, NoReturn

import httpx
from httpx._client import BoundAsyncStream

# What a closed response's stream becomes; reading it again still raises httpx.StreamClosed.
_SPENT = httpx.ByteStream(b"")
# httpx sends ``Content-Length: 0`` for these methods when there is no body (``Request._prepare``).
_EMPTY_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FRAMING = (b"content-length", b"transfer-encoding")


def release(response: httpx.Response) -> None:
    """Break the response <-> stream cycle of a closed response (see the module docstring)."""
    if response.is_closed:
        response.stream = _SPENT


class _HandBack:
    """``NO_AUTH``'s flow: the request once, then the end (what ``Auth().async_auth_flow`` yields)."""

    __slots__ = ("_request",)

    def __init__(self, request: httpx.Request) -> None:
        self._request = request

    def __aiter__(self) -> _HandBack:
        return self

    async def __anext__(self) -> httpx.Request:
        request = self._request
        if request is None:
            raise StopAsyncIteration
        self._request = None  # type: ignore[assignment]
        return request

    async def asend(self, _response: httpx.Response) -> NoReturn:
        raise StopAsyncIteration

    async def aclose(self) -> None:
        return None


class _NoAuth(httpx.Auth):
    """``httpx.Auth()`` (adds nothing), with its flow as a plain object (see the module docstring)."""

    def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return _HandBack(request)  # type: ignore[return-value]  # the three methods ``send`` calls


NO_AUTH = _NoAuth()


def request_auth(client: httpx.AsyncClient, url: httpx.URL) -> httpx.Auth | None:
    """``NO_AUTH`` where ``send`` would make an ``httpx.Auth()``; else ``None``: leave it to ``send``."""
    if client.auth is None and not url.userinfo:
        return NO_AUTH
    return None


def raw_headers(raw: Iterable[tuple[bytes, bytes]]) -> httpx.Headers:
    """``httpx.Headers`` over ``raw`` as it is: names already lower-case, values bytes; nothing re-encoded.

    Sets the private ``_list`` that ``Headers.__init__`` would build, as
    ``(name as sent, lower-case name, value)``; a name that is not lower-case is
    lowered for lookups and sent as given, as httpx does.
    """
    headers = httpx.Headers.__new__(httpx.Headers)
    headers._list = [(name, name.lower(), value) for name, value in raw]
    headers._encoding = None
    return headers


def build_request(
    method: str,
    url: httpx.URL,
    headers: list[tuple[bytes, bytes]],
    stream: httpx.AsyncByteStream | None,
    extensions: dict[str, Any],
) -> httpx.Request:
    """``httpx.Request(method, url, headers=headers, stream=stream, extensions=extensions)``, headers normalised once.

    With a body (``stream``) httpx adds nothing and neither does this. Without
    one, httpx adds ``Host`` (when missing) and, for POST/PUT/PATCH without
    framing, ``Content-Length: 0``, in front of the other headers; so does this.
    """
    # The gateway's own requests (a GET with Host first) need no look at the other names.
    if stream is None and (method in _EMPTY_BODY_METHODS or not headers or headers[0][0].lower() != b"host"):
        names = {name.lower() for name, _ in headers}
        auto: list[tuple[bytes, bytes]] = []
        if b"host" not in names and url.host:
            auto.append((b"Host", url.netloc))
        if method in _EMPTY_BODY_METHODS and not any(name in names for name in _FRAMING):
            auto.append((b"Content-Length", b"0"))
        if auto:
            headers = auto + headers
    if stream is None:
        stream = _SPENT
    # What ``Request.__init__`` sets when given a stream, without copying the URL (immutable) into a new
    # ``URL``, the fresh headers into a new ``Headers`` or the caller's fresh ``extensions`` into a new dict.
    request = httpx.Request.__new__(httpx.Request)
    request.method = method.upper()
    request.url = url
    request.headers = raw_headers(headers)
    request.extensions = extensions
    request.stream = stream
    return request


def build_response(
    status_code: int,
    raw: Iterable[tuple[bytes, bytes]],
    stream: httpx.AsyncByteStream,
    request: httpx.Request,
    extensions: dict[str, Any],
) -> httpx.Response:
    """``httpx.Response(status_code, headers=raw_headers(raw), stream=..., request=..., extensions=...)``."""
    response = httpx.Response.__new__(httpx.Response)
    response.status_code = status_code
    response.headers = raw_headers(raw)
    response._request = request
    response.next_request = None
    response.extensions = extensions
    response.history = []
    response.is_closed = False
    response.is_stream_consumed = False
    response.default_encoding = "utf-8"
    response.stream = stream
    response._num_bytes_downloaded = 0
    return response


def body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """An iterator over ``response``'s raw body, one layer nearer the transport (see the module docstring).

    ``response.aclose()`` must still be called, as for ``response.stream``.
    """
    return stream_chunks(response.stream)  # type: ignore[arg-type]


def stream_chunks(stream: httpx.AsyncByteStream) -> AsyncIterator[bytes]:
    """``stream``'s chunks; for httpx's ``BoundAsyncStream``, its inner stream's (see ``body_chunks``)."""
    if type(stream) is BoundAsyncStream:
        stream = stream._stream
    return stream.__aiter__()


async def close_response(response: httpx.Response) -> None:
    """``await response.aclose()`` without its generator-based context manager (see the module docstring)."""
    if response.is_closed:
        return
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise RuntimeError("Attempted to call an async close on an sync stream.")
    response.is_closed = True
    try:
        await stream.aclose()
    except httpx.RequestError as exc:
        if response._request is not None:  # as httpx's request_context does
            exc.request = response._request
        raise
