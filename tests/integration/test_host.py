"""Host and the request target (RFC 9112 §3.2), over raw sockets.

A request whose Host is missing, repeated or not a ``host[:port]`` gets 400 and
reaches no upstream; neither does an absolute-form target with userinfo or an
invalid authority. What the upstream gets as X-Forwarded-Host is
always a valid host.
"""

from __future__ import annotations

import json

import pytest

from tests.gateway import route, run_gateway
from tests.servers import LOOPBACK, parse_response, raw_http

pytestmark = pytest.mark.anyio


def request(target: bytes, *fields: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"\r\n".join([b"GET " + target + b" " + version, *fields, b"Connection: close"]) + b"\r\n\r\n"


async def send(port: int, data: bytes) -> tuple[bytes, object]:
    raw = await raw_http(LOOPBACK, port, data)
    return raw, parse_response(raw)


BAD = [
    request(b"/api/echo"),  # no Host
    request(b"/api/echo", b"Host: a.example", b"Host: evil.example"),
    request(b"/api/echo", b"Host: evil.example/../admin"),
    request(b"/api/echo", b"Host: a b.example"),
    request(b"/api/echo", b"Host: x@evil.example"),
    request(b"/api/echo", b"Host: a.example, evil.example"),
    request(b"/api/echo", b"Host: a.example,evil.example"),
    request(b"/api/echo", b"Host: a.example:80x"),
    request(b"/api/echo", b"Host: "),
    request(b"http://user:pw@a.example/api/echo", b"Host: a.example"),  # userinfo
    request(b"http://a..example/api/echo", b"Host: a.example"),  # an invalid authority
    request(b"ftp://a.example/api/echo", b"Host: a.example"),
]


async def test_a_bad_host_or_target_gets_400_and_reaches_no_upstream(upstream):
    server, stats = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        for data in BAD:
            raw, response = await send(gw.port, data)
            assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (data, raw[:300])
            assert response.header_values(b"content-type") == [b"application/problem+json"], data
            assert json.loads(response.body)["type"] == "urn:gatehouse:problem:bad-request"
    assert sum(stats.requests.values()) == 0


async def test_valid_hosts_are_forwarded_in_x_forwarded_host(upstream):
    server, stats = upstream
    good = [
        (request(b"/api/echo", b"Host: a.example"), b"a.example"),
        (request(b"/api/echo", b"Host: A.Example:8080"), b"A.Example:8080"),
        (request(b"/api/echo", b"Host: 127.0.0.1:8000"), b"127.0.0.1:8000"),
        (request(b"/api/echo", b"Host: [::1]:8000"), b"[::1]:8000"),
        # Absolute-form: its authority is the request's host, whatever Host says (RFC 9112 §3.2.2).
        (request(b"http://a.example/api/echo", b"Host: a.example"), b"a.example"),
        (request(b"http://b.example/api/echo", b"Host: a.example"), b"b.example"),
    ]
    async with run_gateway(route("api", "/api", server.url)) as gw:
        for data, host in good:
            _, response = await send(gw.port, data)
            assert response.status == 200, (data, response.body)
            echo = json.loads(response.body)
            assert [v for k, v in echo["headers"] if k == "x-forwarded-host"] == [host.decode()]
    assert stats.requests["/echo"] == len(good)


async def test_http_1_0_without_host_is_served(upstream):
    server, _ = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        _, response = await send(gw.port, request(b"/api/echo", version=b"HTTP/1.0"))
    assert response.status == 200


async def test_a_trusted_proxys_invalid_forwarded_host_is_not_copied(upstream):
    server, _ = upstream
    async with run_gateway(route("api", "/api", server.url), trusted_proxies=["127.0.0.1/32"]) as gw:
        _, response = await send(
            gw.port, request(b"/api/echo", b"Host: a.example", b"X-Forwarded-Host: evil.example/../admin")
        )
    echo = json.loads(response.body)
    assert [v for k, v in echo["headers"] if k == "x-forwarded-host"] == ["a.example"]
