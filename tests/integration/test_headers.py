"""Headers over real sockets: hop-by-hop out both ways, X-Forwarded-*, request ids, route rules."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.gateway import RunningGateway, route, run_gateway
from tests.servers import LOOPBACK, RawResponse, parse_response, raw_http, run_uvicorn
from tests.upstreams import SET_COOKIES, UPSTREAM_DATE, UPSTREAM_SERVER

pytestmark = pytest.mark.anyio

# traceparent: propagated upstream always (the caller's trace, or a new one).
GATEWAY_HEADERS = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "x-request-id",
    "traceparent",
]


async def raw_request(
    gw: RunningGateway, target: bytes, *fields: bytes, method: bytes = b"GET", host: bytes | None = None, body=b""
) -> RawResponse:
    """Send exactly the given header fields (plus Host) and parse the answer."""
    host = host if host is not None else f"{LOOPBACK}:{gw.port}".encode()
    head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, host)
    data = await raw_http(LOOPBACK, gw.port, head + b"".join(field + b"\r\n" for field in fields) + b"\r\n" + body)
    return parse_response(data)


def echoed(response: RawResponse) -> dict:
    assert response.status == 200, response.body
    return json.loads(response.body)


def values(echo: dict, name: str) -> list[str]:
    return [value for key, value in echo["headers"] if key == name]


def names(echo: dict) -> list[str]:
    return [key for key, _ in echo["headers"]]


async def test_hop_by_hop_request_headers_are_not_forwarded(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        response = await raw_request(
            gw,
            b"/up/echo",
            b"Connection: keep-alive, X-Hop",
            b"X-Hop: 1",
            b"Keep-Alive: timeout=5",
            b"TE: trailers",
            b"Upgrade: websocket",
            b"Proxy-Authorization: Basic dXNlcjpwYXNz",
            b"Proxy-Connection: keep-alive",
            b"Trailer: X-Checksum",
            b"X-End-To-End: kept",
        )
    echo = echoed(response)
    for name in ("connection", "x-hop", "keep-alive", "te", "upgrade", "proxy-authorization", "proxy-connection"):
        assert values(echo, name) == [], name
    assert values(echo, "trailer") == []
    assert values(echo, "x-end-to-end") == ["kept"]


async def test_connection_cannot_nominate_content_length_and_lose_the_body(upstream):
    # Content-Length frames the message the gateway forwards: naming it in Connection must not
    # strip it (RFC 9110 7.6.1 forbids listing end-to-end fields; a proxy must not corrupt the body).
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        response = await raw_request(
            gw,
            b"/up/echo",
            b"Connection: keep-alive, Content-Length",
            b"Content-Length: 5",
            method=b"POST",
            body=b"hello",
        )
    echo = echoed(response)
    assert echo["body_length"] == 5
    assert values(echo, "content-length") == ["5"]
    assert stats.requests["/echo"] == 1


async def test_client_transfer_encoding_is_reframed_not_copied(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        response = await raw_request(
            gw,
            b"/up/echo",
            b"Transfer-Encoding: chunked",
            b"Content-Type: text/plain",
            method=b"POST",
            body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
    echo = echoed(response)
    # The upstream hop is framed anew: one chunked coding, and the body arrives whole.
    assert values(echo, "transfer-encoding") == ["chunked"]
    assert values(echo, "content-length") == []
    assert echo["body_length"] == len(b"hello world")


async def hop_by_hop_upstream(scope, receive, send):
    assert scope["type"] == "http"
    await receive()
    headers = [
        (b"connection", b"X-Internal"),
        (b"x-internal", b"secret"),
        (b"keep-alive", b"timeout=5, max=100"),
        (b"proxy-authenticate", b"Basic realm=upstream"),
        (b"trailer", b"X-Checksum"),
        (b"upgrade", b"h2c"),
        (b"x-request-id", b"upstream-made-this-up"),
        (b"x-end-to-end", b"kept"),
        (b"transfer-encoding", b"chunked"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
    await send({"type": "http.response.body", "body": b"world"})


async def test_hop_by_hop_response_headers_are_not_returned():
    async with (
        run_uvicorn(hop_by_hop_upstream, lifespan="off") as server,
        run_gateway(route("up", "/up", server.url)) as gw,
    ):
        response = await raw_request(gw, b"/up/anything")
    assert response.status == 200
    for name in (b"x-internal", b"keep-alive", b"proxy-authenticate", b"trailer", b"upgrade"):
        assert response.header_values(name) == [], name
    assert b"secret" not in b"".join(value for _, value in response.headers)
    assert response.header_values(b"x-end-to-end") == [b"kept"]
    # The gateway frames the body itself: at most one chunked coding, no Connection from upstream.
    assert len(response.header_values(b"transfer-encoding")) <= 1
    assert b"x-internal" not in b",".join(response.header_values(b"connection")).lower()
    assert response.body == b"hello world"


async def test_upstream_request_id_is_replaced_by_the_gateways():
    async with (
        run_uvicorn(hop_by_hop_upstream, lifespan="off") as server,
        run_gateway(route("up", "/up", server.url)) as gw,
    ):
        response = await raw_request(gw, b"/up/anything", b"X-Request-ID: client-chose-this")
    assert response.header_values(b"x-request-id") == [b"client-chose-this"]


async def test_two_set_cookie_headers_stay_two(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        response = await raw_request(gw, b"/up/cookies")
    assert response.status == 200
    assert response.header_values(b"set-cookie") == list(SET_COOKIES)


async def test_host_is_the_upstream_authority_by_default(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        echo = echoed(await raw_request(gw, b"/up/echo", host=b"gateway.example"))
    assert values(echo, "host") == [f"{LOOPBACK}:{server.port}"]
    assert values(echo, "x-forwarded-host") == ["gateway.example"]


async def test_host_is_the_clients_with_preserve_host(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url, preserve_host=True)) as gw:
        echo = echoed(await raw_request(gw, b"/up/echo", host=b"gateway.example"))
    assert values(echo, "host") == ["gateway.example"]
    assert values(echo, "x-forwarded-host") == ["gateway.example"]


async def test_x_forwarded_for_is_the_client_and_an_untrusted_claim_is_ignored(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        echo = echoed(
            await raw_request(
                gw,
                b"/up/echo",
                b"X-Forwarded-For: 203.0.113.9",
                b"X-Forwarded-Proto: https",
                b"X-Forwarded-Host: forged.example",
                b"X-Forwarded-Prefix: /forged",
                b"Forwarded: for=203.0.113.9",
            )
        )
    assert values(echo, "x-forwarded-for") == ["127.0.0.1"]
    assert values(echo, "x-forwarded-proto") == ["http"]
    assert values(echo, "x-forwarded-host") == [f"{LOOPBACK}:{gw.port}"]
    assert values(echo, "x-forwarded-prefix") == ["/up"]
    assert values(echo, "forwarded") == []


async def test_x_forwarded_for_is_appended_from_a_trusted_proxy(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url), trusted_proxies=["127.0.0.0/8"]) as gw:
        echo = echoed(
            await raw_request(
                gw,
                b"/up/echo",
                b"X-Forwarded-For: 203.0.113.9, 198.51.100.7",
                b"X-Forwarded-Proto: https",
                b"X-Forwarded-Host: public.example",
            )
        )
    assert values(echo, "x-forwarded-for") == ["203.0.113.9, 198.51.100.7, 127.0.0.1"]
    assert values(echo, "x-forwarded-proto") == ["https"]
    assert values(echo, "x-forwarded-host") == ["public.example"]


async def test_x_forwarded_proto_host_and_prefix_are_set(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        echo = echoed(await raw_request(gw, b"/up/echo", host=b"gateway.example:8443"))
    assert values(echo, "x-forwarded-for") == ["127.0.0.1"]
    assert values(echo, "x-forwarded-proto") == ["http"]
    assert values(echo, "x-forwarded-host") == ["gateway.example:8443"]
    assert values(echo, "x-forwarded-prefix") == ["/up"]


async def test_x_forwarded_prefix_is_absent_without_strip_prefix(upstream):
    server, _ = upstream
    async with run_gateway(route("echo", "/echo", server.url, strip_prefix=False)) as gw:
        echo = echoed(await raw_request(gw, b"/echo"))
    assert values(echo, "x-forwarded-prefix") == []


async def test_sane_request_id_is_kept_upstream_and_returned(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        response = await raw_request(gw, b"/up/echo", b"X-Request-ID: trace-42.a:b/c=")
    assert values(echoed(response), "x-request-id") == ["trace-42.a:b/c="]
    assert response.header_values(b"x-request-id") == [b"trace-42.a:b/c="]


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(None, id="missing"),
        pytest.param(b"has spaces in it", id="spaces"),
        pytest.param(b"a" * 129, id="too-long"),
        pytest.param(b'quote"semicolon;', id="odd-characters"),
    ],
)
async def test_request_id_is_generated_when_missing_or_insane_and_both_sides_agree(upstream, sent):
    server, _ = upstream
    fields = () if sent is None else (b"X-Request-ID: " + sent,)
    async with run_gateway(route("up", "/up", server.url)) as gw:
        response = await raw_request(gw, b"/up/echo", *fields)
    (sent_upstream,) = values(echoed(response), "x-request-id")
    (returned,) = response.header_values(b"x-request-id")
    assert sent_upstream == returned.decode()
    assert re.fullmatch(r"[0-9a-f]{32}", sent_upstream)


async def test_a_128_character_request_id_is_still_sane(upstream):
    server, _ = upstream
    rid = b"r" * 128
    async with run_gateway(route("up", "/up", server.url)) as gw:
        response = await raw_request(gw, b"/up/echo", b"X-Request-ID: " + rid)
    assert values(echoed(response), "x-request-id") == [rid.decode()]
    assert response.header_values(b"x-request-id") == [rid]


async def test_upstream_sees_only_what_the_client_sent_plus_forwarding_headers(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        echo = echoed(await raw_request(gw, b"/up/echo"))
    assert sorted(names(echo)) == sorted([*GATEWAY_HEADERS, "x-forwarded-prefix"])


async def test_upstream_sees_no_added_headers_without_strip_prefix(upstream):
    server, _ = upstream
    async with run_gateway(route("echo", "/echo", server.url, strip_prefix=False)) as gw:
        echo = echoed(await raw_request(gw, b"/echo"))
    assert sorted(names(echo)) == sorted(GATEWAY_HEADERS)


async def test_upstream_sees_a_posted_body_framed_only_by_the_clients_content_length(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        response = await raw_request(gw, b"/up/echo", b"Content-Length: 5", method=b"POST", body=b"hello")
    echo = echoed(response)
    assert sorted(names(echo)) == sorted([*GATEWAY_HEADERS, "x-forwarded-prefix", "content-length"])
    assert values(echo, "content-length") == ["5"]
    assert echo["body_length"] == 5


async def test_client_gets_one_date_and_one_server_header(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw:
        response = await raw_request(gw, b"/up/headers")
    assert response.status == 200
    assert response.header_values(b"server") == [b"gatehouse"]
    (date,) = response.header_values(b"date")
    assert date != UPSTREAM_DATE
    assert UPSTREAM_SERVER not in b"".join(value for _, value in response.headers)


async def test_route_request_headers_set_replaces_and_remove_drops(upstream):
    server, _ = upstream
    rules = {"set": {"X-Api-Key": "gateway-key", "X-Added": "yes"}, "remove": ["X-Debug", "User-Agent"]}
    async with run_gateway(route("up", "/up", server.url, request_headers=rules)) as gw:
        echo = echoed(
            await raw_request(
                gw, b"/up/echo", b"X-Api-Key: forged", b"X-Debug: 1", b"User-Agent: curl/8", b"X-Other: kept"
            )
        )
    assert values(echo, "x-api-key") == ["gateway-key"]
    assert values(echo, "x-added") == ["yes"]
    assert values(echo, "x-debug") == []
    assert values(echo, "user-agent") == []
    assert values(echo, "x-other") == ["kept"]


async def test_route_response_headers_set_replaces_and_remove_drops(upstream):
    server, _ = upstream
    rules = {"set": {"Content-Type": "text/x-gatehouse", "X-Frame-Options": "DENY"}, "remove": ["Set-Cookie"]}
    async with run_gateway(route("up", "/up", server.url, response_headers=rules)) as gw:
        cookies = await raw_request(gw, b"/up/cookies")
        echo = await raw_request(gw, b"/up/echo")
    assert cookies.header_values(b"set-cookie") == []
    assert cookies.header_values(b"x-frame-options") == [b"DENY"]
    assert echo.header_values(b"content-type") == [b"text/x-gatehouse"]
    assert echo.header_values(b"x-frame-options") == [b"DENY"]


async def test_httpx_client_request_carries_only_its_own_headers(upstream):
    # A normal client's own headers (user-agent, accept, ...) pass; the gateway adds none of its own.
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/echo", headers={"user-agent": "probe/1"})
    echo = response.json()
    assert values(echo, "user-agent") == ["probe/1"]
    assert values(echo, "connection") == []
    assert sorted(set(names(echo)) - set(GATEWAY_HEADERS) - {"x-forwarded-prefix"}) == [
        "accept",
        "accept-encoding",
        "user-agent",
    ]
