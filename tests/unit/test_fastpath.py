"""``app.outbound.fastpath``: the workarounds build what httpx would, and each can go when httpx changes."""

from __future__ import annotations

import gc
import inspect
import weakref

import httpx
import pytest

from app.outbound.clients import make_client
from app.outbound.fastpath import (
    NO_AUTH,
    body_chunks,
    build_request,
    build_response,
    close_response,
    raw_headers,
    release,
    request_auth,
)
from app.proxy.forwarding import watch_response

URL = httpx.URL("http://upstream.test:8080/v1/x?q=%7C")
HEADERS = [(b"host", b"upstream.test:8080"), (b"accept", b"*/*"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]


class Chunks(httpx.AsyncByteStream):
    async def __aiter__(self):
        yield b"body"


def both(method: str, headers: list[tuple[bytes, bytes]], stream: httpx.AsyncByteStream | None = None):
    extensions = {"timeout": {"read": 1.0}}
    ours = build_request(method, URL, headers, stream, extensions)
    httpx_own = httpx.Request(method, URL, headers=headers, stream=stream, extensions=extensions)
    return ours, httpx_own


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", HEADERS),
        ("GET", HEADERS[1:]),  # no Host: httpx adds the URL's
        ("GET", [*HEADERS[1:], (b"Host", b"elsewhere.test")]),  # a Host, not first and not lower-case
        ("GET", []),
        ("POST", HEADERS),  # no body, no framing: Content-Length: 0 goes first
        ("PUT", HEADERS[1:]),
        ("POST", [*HEADERS, (b"content-length", b"0")]),
        ("DELETE", HEADERS),
        ("PATCH", [*HEADERS, (b"transfer-encoding", b"chunked")]),
    ],
)
def test_a_request_without_a_body_is_the_one_httpx_builds(method, headers):
    ours, httpx_own = both(method, headers)
    assert ours.headers.raw == httpx_own.headers.raw
    assert ours.headers.multi_items() == httpx_own.headers.multi_items()
    assert (ours.method, ours.url, ours.extensions) == (httpx_own.method, httpx_own.url, httpx_own.extensions)
    assert ours.url.raw_path == b"/v1/x?q=%7C"
    # The attributes httpx's constructor sets (httpx's own reads a body-less stream: ``_content``).
    assert set(vars(ours)) == set(vars(httpx_own)) - {"_content"}


@pytest.mark.anyio
async def test_a_request_with_a_body_keeps_its_headers_and_stream():
    stream = Chunks()
    ours, httpx_own = both("POST", [*HEADERS, (b"transfer-encoding", b"chunked")], stream)
    assert ours.headers.raw == httpx_own.headers.raw
    assert ours.stream is stream
    assert vars(ours).keys() == vars(httpx_own).keys()
    assert ours.url == httpx_own.url and ours.extensions == httpx_own.extensions


def test_the_method_is_upper_case_as_httpx_makes_it():
    ours, httpx_own = both("get", HEADERS)
    assert ours.method == httpx_own.method == "GET"


def test_raw_headers_look_up_case_insensitively_and_keep_repeated_fields():
    headers = raw_headers([(b"x-api-key", b"k"), (b"X-Upper", b"v"), (b"set-cookie", b"a"), (b"set-cookie", b"b")])
    assert headers["X-API-Key"] == "k" and headers["x-upper"] == "v"
    assert headers.get_list("set-cookie") == ["a", "b"]
    assert headers.raw[1] == (b"X-Upper", b"v")
    headers["authorization"] = "Bearer t"  # httpx.Auth flows add headers like this
    assert headers.raw[-1] == (b"authorization", b"Bearer t")


async def _closed_response(*, released: bool) -> weakref.ref[httpx.Response]:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, stream=Chunks()))
    client = make_client(timeout=httpx.Timeout(5.0), transport=transport)
    async with client:
        response = await client.send(client.build_request("GET", URL), stream=True)
        await response.aread()
        await response.aclose()
        if released:
            release(response)
        return weakref.ref(response)


@pytest.mark.anyio
async def test_a_released_response_is_freed_without_the_cyclic_collector():
    gc.collect()
    gc.disable()
    try:
        assert (await _closed_response(released=True))() is None
    finally:
        gc.enable()


@pytest.mark.anyio
async def test_httpx_still_leaves_a_closed_response_in_a_cycle():
    """When this fails, httpx no longer makes the cycle and ``release`` can go."""
    gc.collect()
    gc.disable()
    try:
        assert (await _closed_response(released=False))() is not None
    finally:
        gc.enable()
        gc.collect()


@pytest.mark.anyio
async def test_release_leaves_an_open_response_alone():
    transport = httpx.MockTransport(lambda _: httpx.Response(200, stream=Chunks()))
    client = make_client(timeout=httpx.Timeout(5.0), transport=transport)
    async with client:
        response = await client.send(client.build_request("GET", URL), stream=True)
        stream = response.stream
        release(response)
        assert response.stream is stream
        assert await response.aread() == b"body"


class PlainChunks(httpx.AsyncByteStream):
    """A transport stream whose iterator is a plain object (as the aiohttp transport's is), not an async generator."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if not self.chunks:
            raise StopAsyncIteration
        return self.chunks.pop(0)

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.anyio
async def test_body_chunks_are_the_transport_streams_own_and_aclose_still_goes_through_httpx():
    inner = PlainChunks([b"a", b"bc"])
    transport = httpx.MockTransport(lambda _: httpx.Response(200, stream=inner))
    client = make_client(timeout=httpx.Timeout(5.0), transport=transport)
    async with client:
        response = await client.send(client.build_request("GET", URL), stream=True)
        chunks = body_chunks(response)
        assert chunks is inner  # no async generator between the relay and the transport
        assert [chunk async for chunk in chunks] == [b"a", b"bc"]
        await response.aclose()
        assert inner.closed and response.is_closed
        assert response.elapsed.total_seconds() >= 0  # BoundAsyncStream.aclose ran


@pytest.mark.anyio
async def test_httpx_still_wraps_the_body_in_an_async_generator():
    """When this fails, httpx no longer adds the layer and ``body_chunks`` can be ``response.stream.__aiter__()``."""
    transport = httpx.MockTransport(lambda _: httpx.Response(200, stream=PlainChunks([b"x"])))
    client = make_client(timeout=httpx.Timeout(5.0), transport=transport)
    async with client:
        response = await client.send(client.build_request("GET", URL), stream=True)
        through_httpx = response.stream.__aiter__()
        assert inspect.isasyncgen(through_httpx)
        await through_httpx.aclose()
        await response.aclose()


class FailingChunks(PlainChunks):
    """Sends its chunks, then fails as an upstream that resets mid-body."""

    async def __anext__(self) -> bytes:
        if not self.chunks:
            raise httpx.ReadError("reset mid-body")
        return self.chunks.pop(0)


@pytest.mark.anyio
async def test_a_watched_body_is_iterated_without_async_generators_and_still_reports_how_it_ended():
    inner = FailingChunks([b"a"])
    transport = httpx.MockTransport(lambda _: httpx.Response(200, stream=inner))
    client = make_client(timeout=httpx.Timeout(5.0), transport=transport)
    closed: list[str] = []
    errors: list[Exception] = []
    async with client:
        response = await client.send(client.build_request("GET", URL), stream=True)
        # As the retrying endpoint and the bulkhead do: one watch inside the other.
        inner_watch = watch_response(response, lambda: closed.append("inner"), errors.append)
        watch_response(inner_watch, lambda: closed.append("outer"))
        chunks = body_chunks(response)
        assert not inspect.isasyncgen(chunks)
        assert await chunks.__anext__() == b"a"
        with pytest.raises(httpx.ReadError):
            await chunks.__anext__()
        assert [type(e) for e in errors] == [httpx.ReadError]
        await response.aclose()
        await response.aclose()
        assert inner.closed and closed == ["inner", "outer"]


class FailingClose(PlainChunks):
    async def aclose(self) -> None:
        self.closed = True
        raise httpx.ReadError("reset while closing")


@pytest.mark.anyio
async def test_close_response_closes_as_httpx_aclose_does():
    inner = PlainChunks([b"a"])
    transport = httpx.MockTransport(lambda _: httpx.Response(200, stream=inner))
    client = make_client(timeout=httpx.Timeout(5.0), transport=transport)
    async with client:
        response = await client.send(client.build_request("GET", URL), stream=True)
        await close_response(response)
        assert inner.closed and response.is_closed
        assert response.elapsed.total_seconds() >= 0  # BoundAsyncStream.aclose ran
        inner.closed = False
        await close_response(response)  # once only, as aclose
        assert not inner.closed


@pytest.mark.anyio
async def test_close_response_attaches_the_request_to_an_error_while_closing_as_httpx_does():
    transport = httpx.MockTransport(lambda _: httpx.Response(200, stream=FailingClose([b"a"])))
    client = make_client(timeout=httpx.Timeout(5.0), transport=transport)
    async with client:
        ours = await client.send(client.build_request("GET", URL), stream=True)
        theirs = await client.send(client.build_request("GET", URL), stream=True)
        with pytest.raises(httpx.ReadError) as by_us:
            await close_response(ours)
        with pytest.raises(httpx.ReadError) as by_httpx:
            await theirs.aclose()
    assert by_us.value.request is ours.request and by_httpx.value.request is theirs.request
    assert ours.is_closed and theirs.is_closed


def test_httpx_aclose_still_closes_inside_request_context():
    """When this fails, httpx's ``aclose`` changed: ``close_response`` must follow or go."""
    assert "request_context" in httpx.Response.aclose.__code__.co_names


# request_auth / NO_AUTH: what send would do with no Auth anywhere, without a fresh Auth and its generators


@pytest.mark.parametrize(
    ("client_auth", "url", "expected"),
    [
        (None, URL, "no-auth"),
        (httpx.BasicAuth("u", "p"), URL, None),  # the client's own Auth: send uses it
        (None, httpx.URL("http://user:pw@upstream.test/x"), None),  # userinfo: send makes a BasicAuth
    ],
    ids=["nothing", "client-auth", "userinfo"],
)
def test_request_auth_stands_in_only_where_send_would_make_a_plain_auth(client_auth, url, expected):
    client = httpx.AsyncClient(auth=client_auth)
    assert request_auth(client, url) is (NO_AUTH if expected == "no-auth" else None)


@pytest.mark.anyio
async def test_no_auth_sends_the_request_unchanged_through_hooks_and_the_transport():
    seen, hooked = [], []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, stream=Chunks())

    async def on_request(request):
        hooked.append(("request", request))

    async def on_response(response):
        hooked.append(("response", response))

    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(
        transport=transport, event_hooks={"request": [on_request], "response": [on_response]}
    ) as client:
        request = build_request("GET", URL, HEADERS, None, {})
        before = list(request.headers.raw)
        response = await client.send(request, stream=True, auth=request_auth(client, URL))
        assert await response.aread() == b"body"
        await response.aclose()
    assert seen == [request] and request.headers.raw == before
    assert hooked == [("request", request), ("response", response)]


def test_build_response_is_the_response_httpx_builds_from_a_transports_fields():
    request = httpx.Request("GET", URL)
    stream = Chunks()
    raw = [(b"Content-Type", b"text/plain"), (b"set-cookie", b"a=1"), (b"Set-Cookie", b"b=2")]
    extensions = {"http_version": b"HTTP/1.1", "reason_phrase": b"OK"}
    ours = build_response(200, raw, stream, request, extensions)
    theirs = httpx.Response(200, headers=raw_headers(raw), stream=stream, request=request, extensions=extensions)
    assert vars(ours).keys() == vars(theirs).keys()
    for name, value in vars(theirs).items():
        if name != "headers":
            assert getattr(ours, name) == value, name
    assert ours.headers.raw == theirs.headers.raw and ours.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert (ours.http_version, ours.reason_phrase, ours.request) == ("HTTP/1.1", "OK", request)
