"""Hostile input over raw sockets: each gets a clear 4xx, and nothing reaches the upstream.

The protected prefix ``/admin`` needs an API key. Every trick below either
normalises to ``/admin`` (and meets the auth check), or is refused outright;
the upstream's request counter proves nothing slipped through.
"""

from __future__ import annotations

import pytest

from app.config.hashing import hash_api_key
from tests.gateway import route, run_gateway
from tests.servers import parse_response, raw_http

pytestmark = pytest.mark.anyio

KEY = b"admin-key"


def admin_route(upstream_url):
    auth = {"type": "api_key", "keys": {"ops": hash_api_key(KEY.decode())}}
    return route("admin", "/admin", upstream_url, auth=auth, max_body_bytes=1024 * 1024)


def request(target: bytes, *headers: bytes, method: bytes = b"GET", body: bytes = b"") -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: gatehouse.test", *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def send(gw, data: bytes):
    return parse_response(await raw_http("127.0.0.1", gw.port, data))


async def test_a_plain_authorised_request_does_reach_the_upstream(upstream):
    server, stats = upstream
    async with run_gateway(admin_route(server.url)) as gw:
        response = await send(gw, request(b"/admin/echo/secret", b"X-API-Key: " + KEY))
    assert response.status == 200
    assert stats.requests["/echo/secret"] == 1


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (b"//admin/echo/secret", 401),
        (b"/./admin/echo/secret", 401),
        (b"/admin/./echo/secret", 401),
        (b"/x/../admin/echo/secret", 401),
        (b"/%61dmin/echo/secret", 401),  # an escaped unreserved letter is still /admin
        (b"/admin/echo/secret.", 401),
        (b"/%2e/admin/echo/secret", 401),  # an escaped '.' is a dot segment, resolved like one
        (b"/%2E%2E/admin/echo/secret", 400),
        (b"/admin%2fecho/secret", 404),  # an escaped '/' stays data: the segment is "admin/echo", no route
        (b"/admin%2Fecho%2fsecret", 404),
        (b"/x/..%2fadmin/echo/secret", 400),
        (b"/admin/echo/%c0%ae%c0%ae/secret", 400),  # overlong UTF-8 for '..'
        (b"/%c0%afadmin/echo/secret", 400),  # overlong UTF-8 for '/'
        (b"/admin/echo/secret%00", 400),
        (b"/admin/echo/secret%0d%0aX-API-Key:%20admin-key", 400),
        (b"/ADMIN/echo/secret", 404),
        (b"/Admin/echo/secret", 404),
        (b"/admin./echo/secret", 404),
        (b"/admin../echo/secret", 404),
        (b"/admin%20/echo/secret", 404),
    ],
)
async def test_path_tricks_on_a_protected_prefix_never_bypass_auth(upstream, target, status):
    server, stats = upstream
    async with run_gateway(admin_route(server.url)) as gw:
        response = await send(gw, request(target))
    assert response.status == status, (target, response.status, response.body[:200])
    assert sum(stats.requests.values()) == 0


@pytest.mark.parametrize(
    ("data", "status"),
    [
        # CR/LF header injection: a bare CR, a bare LF inside a value, obs-fold continuation, NUL.
        (request(b"/admin/echo/x", b"X-Note: a\rX-API-Key: " + KEY), 400),
        (request(b"/admin/echo/x", b"X-Note: a\nX-API-Key: " + KEY), 400),
        (request(b"/admin/echo/x", b"X-Note: a", b" X-API-Key: " + KEY), 400),
        (request(b"/admin/echo/x", b"X-API-Key: " + KEY + b"\x00"), 400),
        # Request smuggling: duplicate conflicting Content-Length, Transfer-Encoding with Content-Length.
        (
            request(b"/admin/echo/x", b"X-API-Key: " + KEY, b"Content-Length: 5", b"Content-Length: 6", method=b"POST")
            + b"hello!",
            400,
        ),
        (request(b"/admin/echo/x", b"X-API-Key: " + KEY, b"Content-Length: 5, 6", method=b"POST") + b"hello!", 400),
        (
            request(
                b"/admin/echo/x",
                b"X-API-Key: " + KEY,
                b"Transfer-Encoding: chunked",
                b"Content-Length: 5",
                method=b"POST",
            )
            + b"5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        # Oversized headers: too many fields, one large field, a very large one.
        (request(b"/admin/echo/x", b"X-API-Key: " + KEY, *(b"X-Pad-%d: v" % i for i in range(150))), 431),
        (request(b"/admin/echo/x", b"X-API-Key: " + KEY, b"X-Big: " + b"a" * 20_000), 431),
        (request(b"/admin/echo/x", b"X-API-Key: " + KEY, b"X-Huge: " + b"a" * 200_000), 431),
        # A 10 GiB declared body is refused before a byte of it is read.
        (request(b"/admin/echo/x", b"X-API-Key: " + KEY, b"Content-Length: 10737418240", method=b"POST"), 413),
        (request(b"/admin/echo/x", b"Content-Length: 10737418240", method=b"POST"), 413),
    ],
    ids=[
        "bare-cr",
        "bare-lf-in-value",
        "obs-fold",
        "nul-in-value",
        "duplicate-content-length",
        "content-length-list",
        "te-and-cl",
        "too-many-headers",
        "header-too-large",
        "very-large-header",
        "10-gib-declared-body",
        "10-gib-declared-body-unauthenticated",
    ],
)
async def test_hostile_framing_and_headers_get_a_clear_4xx_and_nothing_upstream(upstream, data, status):
    server, stats = upstream
    async with run_gateway(admin_route(server.url)) as gw:
        response = await send(gw, data)
    assert response.status == status, (response.status, response.body[:200])
    assert sum(stats.requests.values()) == 0
