"""The gateway keeps no cookie jar: one caller's cookies never reach another's request."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.gateway import route, run_gateway
from tests.servers import LOOPBACK, parse_response, raw_http
from tests.upstreams import SET_COOKIES

pytestmark = pytest.mark.anyio


def cookie_values(echo: dict) -> list[str]:
    return [value for name, value in echo["headers"] if name == "cookie"]


async def test_cookies_set_for_one_caller_never_reach_the_next(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        async with httpx.AsyncClient() as caller_a:
            first = await caller_a.get(f"{gw.url}/up/cookies")
            assert first.headers.get_list("set-cookie") == [cookie.decode() for cookie in SET_COOKIES]
            again = await caller_a.get(f"{gw.url}/up/cookies")  # the gateway's client has seen them twice now
            assert again.status_code == 200
        async with httpx.AsyncClient() as caller_b:
            second = await caller_b.get(f"{gw.url}/up/echo")
        # And a bare socket, so no client library can have a jar of its own.
        request = b"GET /up/echo HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (LOOPBACK.encode(), gw.port)
        third = parse_response(await raw_http(LOOPBACK, gw.port, request))
    assert stats.requests["/cookies"] == 2
    assert cookie_values(second.json()) == []
    assert cookie_values(json.loads(third.body)) == []


async def test_cookie_the_client_sends_is_forwarded_unchanged(upstream):
    server, _ = upstream
    cookie = b'session=abc123; theme="dark mode"; enc=%20%3B; empty='
    async with run_gateway(route("up", "/up", server.url)) as gw:
        request = b"GET /up/echo HTTP/1.1\r\nHost: %s:%d\r\nCookie: %s\r\n\r\n" % (LOOPBACK.encode(), gw.port, cookie)
        response = parse_response(await raw_http(LOOPBACK, gw.port, request))
    assert response.status == 200
    assert cookie_values(json.loads(response.body)) == [cookie.decode()]


async def test_a_callers_cookie_is_not_replayed_for_the_next_caller(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        async with httpx.AsyncClient() as caller_a:
            sent = await caller_a.get(f"{gw.url}/up/echo", headers={"cookie": "session=caller-a"})
        async with httpx.AsyncClient() as caller_b:
            after = await caller_b.get(f"{gw.url}/up/echo")
    assert cookie_values(sent.json()) == ["session=caller-a"]
    assert cookie_values(after.json()) == []


async def test_set_cookie_from_a_request_that_carried_cookies_is_not_kept(upstream):
    # Caller A both sends a cookie and receives two; caller B, on the same pooled connection, sees none.
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url), limits={"max_connections": 1}) as gw:
        async with httpx.AsyncClient() as caller_a:
            await caller_a.get(f"{gw.url}/up/cookies", headers={"cookie": "session=caller-a"})
        async with httpx.AsyncClient() as caller_b:
            after = await caller_b.get(f"{gw.url}/up/echo")
    assert cookie_values(after.json()) == []
