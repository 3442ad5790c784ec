"""The outbound client factory keeps no cookies; outbound URLs are built byte for byte; aiohttp errors map to httpx."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest
import yarl

from app.outbound.clients import make_client
from app.outbound.transport import _Slots, map_aiohttp_errors
from app.outbound.urls import exact_url, origin_text, path_and_query, yarl_url

pytestmark = pytest.mark.anyio

ORIGIN = httpx.URL("http://upstream.test:8080")


class CookieSetter:
    """Every response sets a cookie; records the Cookie header each request carried."""

    def __init__(self):
        self.cookies = []

    def __call__(self, request):
        self.cookies.append(request.headers.get("cookie"))
        return httpx.Response(200, headers=[("set-cookie", "session=abc; Path=/"), ("set-cookie", "b=2")])


def client_for(handler):
    return make_client(timeout=httpx.Timeout(5), transport=httpx.MockTransport(handler))


# No cookies


async def test_a_cookie_set_by_one_response_is_not_sent_with_the_next_request():
    upstream = CookieSetter()
    async with client_for(upstream) as client:
        first = await client.get(ORIGIN.join("/login"))
        await client.get(ORIGIN.join("/me"))
        assert first.headers.get_list("set-cookie") == ["session=abc; Path=/", "b=2"]  # the response keeps it
        assert len(client.cookies) == 0
    assert upstream.cookies == [None, None]


async def test_a_cookie_from_one_client_never_reaches_another():
    upstream = CookieSetter()
    async with client_for(upstream) as a, client_for(upstream) as b:
        await a.get(ORIGIN.join("/login"))
        await b.get(ORIGIN.join("/me"))
    assert upstream.cookies == [None, None]


async def test_assigning_cookies_to_the_client_changes_nothing():
    upstream = CookieSetter()
    async with client_for(upstream) as client:
        client.cookies = {"session": "forged"}
        client.cookies = httpx.Cookies({"other": "x"})
        await client.get(ORIGIN.join("/me"))
        assert len(client.cookies) == 0
    assert upstream.cookies == [None]


async def test_setting_a_cookie_on_one_clients_jar_does_not_leak_to_other_clients():
    upstream = CookieSetter()
    async with client_for(upstream) as a, client_for(upstream) as b:
        try:
            a.cookies.set("session", "alices")
            await b.get(ORIGIN.join("/me"))
        finally:
            a.cookies.clear()  # the jar is process-wide: never leave the cookie for other tests
    assert upstream.cookies == [None]


async def test_clients_do_not_follow_redirects():
    def redirect(request):
        if request.url.path == "/a":
            return httpx.Response(302, headers={"location": "/elsewhere"})
        return httpx.Response(200)

    async with client_for(redirect) as client:
        response = await client.get(ORIGIN.join("/a"))
    assert response.status_code == 302
    assert response.headers["location"] == "/elsewhere"


# Exact URLs


PATH = "/a|b{c}^/%zz/x%2Fy"
QUERY = "q=|{}^&r=%zz&s=%2F&t=a+b&u"


def test_exact_url_keeps_path_and_query_byte_for_byte():
    url = exact_url(ORIGIN, PATH, QUERY)
    assert url.raw_path == b"/a|b{c}^/%zz/x%2Fy?q=|{}^&r=%zz&s=%2F&t=a+b&u"
    assert url.scheme == "http"
    assert url.raw_host == b"upstream.test"
    assert url.port == 8080
    assert str(url) == "http://upstream.test:8080/a|b{c}^/%zz/x%2Fy?q=|{}^&r=%zz&s=%2F&t=a+b&u"


def test_httpx_own_constructor_would_have_requoted_them():
    # Why exact_url exists: if httpx ever stops re-quoting, this module may no longer be needed.
    assert httpx.URL("http://upstream.test:8080" + PATH).raw_path != PATH.encode()


def test_exact_url_drops_the_fragment_and_the_origins_own_path_and_query():
    url = exact_url(httpx.URL("https://upstream.test/base?x=1#frag"), "/p%zz", "q=%2F")
    assert url.raw_path == b"/p%zz?q=%2F"
    assert url.fragment == ""
    assert str(url) == "https://upstream.test/p%zz?q=%2F"


@pytest.mark.parametrize("query", [None, ""], ids=["none", "empty"])
def test_exact_url_without_a_query_has_no_question_mark(query):
    url = exact_url(ORIGIN, "/p|q", query)
    assert url.raw_path == b"/p|q"
    assert url.query == b""


def test_path_and_query_round_trip():
    url = exact_url(ORIGIN, PATH, QUERY)
    assert path_and_query(url) == (PATH, QUERY)
    again = exact_url(ORIGIN, *path_and_query(url))
    assert again.raw_path == url.raw_path
    assert path_and_query(exact_url(ORIGIN, "/only|path", None)) == ("/only|path", None)


async def test_exact_url_goes_on_the_wire_unchanged():
    seen = []

    def record(request):
        seen.append(request.url.raw_path)
        return httpx.Response(204)

    async with client_for(record) as client:
        await client.get(exact_url(ORIGIN, PATH, QUERY))
    assert seen == [b"/a|b{c}^/%zz/x%2Fy?q=|{}^&r=%zz&s=%2F&t=a+b&u"]


# The aiohttp transport's URL: built from the parts, the same URL a re-parse of the string gives


@pytest.mark.parametrize(
    "url",
    [
        exact_url(ORIGIN, PATH, QUERY),
        exact_url(ORIGIN, "/p|q", None),
        exact_url(ORIGIN, "/p|q", ""),
        exact_url(httpx.URL("https://upstream.test"), "/", None),
        exact_url(httpx.URL("http://[::1]:9000"), "/v6/%41", "a=%zz"),
        exact_url(httpx.URL("http://user:pw@upstream.test:81"), "/u", "x"),
    ],
    ids=["odd-bytes", "no-query", "empty-query", "default-port", "ipv6", "userinfo"],
)
def test_yarl_url_is_the_url_a_reparse_would_give(url):
    built = yarl_url(url)
    parsed = yarl.URL(str(url), encoded=True)
    assert built == parsed
    assert (built.raw_path_qs, built.host_port_subcomponent, built.user) == (
        parsed.raw_path_qs,
        parsed.host_port_subcomponent,
        parsed.user,
    )
    assert built.raw_path_qs.encode() == url.raw_path  # what aiohttp puts on the request line


# aiohttp errors as httpx errors


@pytest.mark.parametrize(
    ("raised", "reading", "expected"),
    [
        (aiohttp.ConnectionTimeoutError(), False, httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError(), True, httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), True, httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("cut"), True, httpx.ReadError),
        (aiohttp.ClientOSError(), True, httpx.ReadError),
        (aiohttp.ClientOSError(), False, httpx.WriteError),
        (aiohttp.ClientError(), False, httpx.TransportError),
        (TimeoutError(), True, httpx.ReadTimeout),
    ],
)
def test_aiohttp_errors_become_the_httpx_error_that_says_the_same(raised, reading, expected):
    with pytest.raises(expected) as caught, map_aiohttp_errors(reading=reading):
        raise raised
    assert type(caught.value) is expected
    assert caught.value.__cause__ is raised


def test_other_errors_and_success_pass_through_the_aiohttp_mapping():
    with pytest.raises(KeyError), map_aiohttp_errors():
        raise KeyError("not a transport error")
    with map_aiohttp_errors():
        pass


def test_origin_text_is_httpx_s_scheme_and_netloc_per_origin_and_its_cache_stays_bounded():
    known: dict[tuple[object, ...], str] = {}
    for url, text in [
        ("http://127.0.0.1:9000/a?b=1", "http://127.0.0.1:9000"),
        ("http://127.0.0.1:9001/a", "http://127.0.0.1:9001"),
        ("https://user:pw@Example.COM/x", "https://example.com"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        ("http://127.0.0.1:9000/other", "http://127.0.0.1:9000"),
    ]:
        assert origin_text(httpx.URL(url), known) == text
    assert len(known) == 4
    for port in range(2000):
        origin_text(httpx.URL(f"http://h:{port}/"), known)
    assert len(known) <= 1024


@pytest.mark.anyio
async def test_aiohttp_session_request_still_only_wraps_its_private_request():
    """The aiohttp transport awaits ``ClientSession._request`` itself (15k instructions a request less).

    ``request`` only wraps that coroutine in a context manager that ``await`` unwraps again,
    built through a ``typing`` generic alias (whose ``__call__`` tries to set ``__orig_class__``
    on a slotted object and swallows the error). When this fails, ``request`` does more than
    that: the transport should call it again.
    """
    async with aiohttp.ClientSession() as session:
        manager = session.request("GET", "http://127.0.0.1:9/")
        try:
            assert manager._coro.cr_code is aiohttp.ClientSession._request.__code__
        finally:
            manager.close()


@pytest.mark.anyio
async def test_a_free_slot_is_taken_without_suspending_but_never_ahead_of_a_waiter():
    """``_Slots.take_free`` reads the Semaphore's own state: it must agree with ``locked()``."""
    slots = _Slots(1)
    assert not slots.locked() and slots.take_free() and slots.in_use == 1
    assert slots.locked() and not slots.take_free() and slots.in_use == 1
    waiter = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0)  # the waiter queues
    slots.release()  # the slot is the waiter's now, though it has not run yet
    assert slots.locked() and not slots.take_free()
    await waiter
    assert slots.in_use == 1 and not slots.take_free()
    slots.release()
    assert slots.take_free() and slots.in_use == 1
