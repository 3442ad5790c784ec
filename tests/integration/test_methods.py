"""CONNECT and TRACE are opt-in per route; method-override headers never change a method by stealth."""

from __future__ import annotations

import json

import pytest

from tests.gateway import route, run_gateway
from tests.servers import LOOPBACK, parse_response, raw_http

pytestmark = pytest.mark.anyio


def request(method: bytes, target: bytes, *fields: bytes) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: gatehouse.test", *fields, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def test_connect_and_trace_get_405_on_a_route_that_does_not_list_them(upstream):
    server, stats = upstream
    async with run_gateway(route("api", "/", server.url)) as gw:
        answers = [
            await raw_http(LOOPBACK, gw.port, data)
            for data in (
                request(b"TRACE", b"/echo", b"Authorization: Bearer secret"),
                request(b"CONNECT", b"/echo"),
                request(b"CONNECT", b"internal.example:443"),
            )
        ]
    for raw in answers[:2]:
        assert raw.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n"), raw[:200]
        response = parse_response(raw)
        assert response.header_values(b"allow") == [b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"]
        assert json.loads(response.body)["type"] == "urn:gatehouse:problem:method-not-allowed"
    # An authority-form target is no path at all: refused before any route is chosen.
    assert answers[2].startswith(b"HTTP/1.1 400 Bad Request\r\n"), answers[2][:200]
    assert sum(stats.requests.values()) == 0


async def test_a_route_that_lists_trace_passes_it_on(upstream):
    server, stats = upstream
    async with run_gateway(route("api", "/", server.url, methods=["GET", "TRACE"])) as gw:
        response = parse_response(await raw_http(LOOPBACK, gw.port, request(b"TRACE", b"/echo")))
    assert response.status == 200
    assert json.loads(response.body)["method"] == "TRACE"


OVERRIDES = (b"X-HTTP-Method-Override: DELETE", b"X-Method-Override: DELETE", b"X-HTTP-Method: DELETE")


async def test_method_override_headers_are_dropped_unless_the_route_allows_them(upstream):
    server, _ = upstream
    async with run_gateway(
        route("plain", "/plain", server.url, methods=["GET"]),
        route("legacy", "/legacy", server.url, allow_method_override=True),
    ) as gw:
        plain = parse_response(await raw_http(LOOPBACK, gw.port, request(b"GET", b"/plain/echo", *OVERRIDES)))
        legacy = parse_response(await raw_http(LOOPBACK, gw.port, request(b"GET", b"/legacy/echo", *OVERRIDES)))
    names = {name for name, _ in json.loads(plain.body)["headers"]}
    assert not names & {"x-http-method-override", "x-method-override", "x-http-method"}
    legacy_names = [name for name, _ in json.loads(legacy.body)["headers"]]
    assert {"x-http-method-override", "x-method-override", "x-http-method"} <= set(legacy_names)
