"""CORS per route: preflights answered by the gateway, headers on answers and on the gateway's own errors."""

from __future__ import annotations

import httpx
import pytest

from app.config.hashing import hash_api_key
from tests.gateway import route, run_gateway

pytestmark = pytest.mark.anyio

APP = "http://127.0.0.1:5173"
CORS = {
    "allow_origins": [APP],
    "allow_origin_regex": r"https://[a-z]+\.example\.test",
    "allow_methods": ["GET", "PUT"],
    "allow_headers": ["X-Trace"],
    "expose_headers": ["X-Request-ID"],
    "allow_credentials": True,
    "max_age": 120,
}


def preflight(origin, method="PUT", headers="x-trace, content-type"):
    return {"origin": origin, "access-control-request-method": method, "access-control-request-headers": headers}


async def test_preflight_is_answered_by_the_gateway_even_on_a_get_only_route(upstream):
    server, stats = upstream
    auth = {"type": "api_key", "keys": {"k": hash_api_key("k")}}
    spec = route("c", "/c", server.url, cors=CORS, methods=["GET", "PUT"], auth=auth)
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.options("/c/echo/x", headers=preflight(APP))
        from_regex = await client.options("/c/echo/x", headers=preflight("https://shop.example.test"))
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-allow-methods"] == "GET, PUT"
    assert response.headers["access-control-allow-headers"] == "X-Trace"
    assert response.headers["access-control-max-age"] == "120"
    assert "Origin" in response.headers["vary"]
    assert from_regex.headers["access-control-allow-origin"] == "https://shop.example.test"
    assert sum(stats.requests.values()) == 0  # the upstream never saw a preflight


@pytest.mark.parametrize(
    "headers",
    [
        preflight("http://127.0.0.1:6666"),
        preflight("https://evil.example.test.attacker.test"),
        preflight(APP, method="DELETE"),
        preflight(APP, headers="x-secret"),
    ],
    ids=["other-origin", "regex-must-match-whole-origin", "method", "header"],
)
async def test_disallowed_preflight_is_403_without_cors_headers(upstream, headers):
    server, stats = upstream
    async with run_gateway(route("c", "/c", server.url, cors=CORS)) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.options("/c/echo/x", headers=headers)
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    assert sum(stats.requests.values()) == 0


async def test_actual_response_from_an_allowed_origin_gets_the_routes_cors_headers(upstream):
    server, _ = upstream
    spec = route("c", "/c", server.url, cors=CORS)
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        allowed = await client.get("/c/echo/x", headers={"origin": APP})
        other = await client.get("/c/echo/x", headers={"origin": "http://127.0.0.1:6666"})
    assert allowed.headers["access-control-allow-origin"] == APP
    assert allowed.headers["access-control-expose-headers"] == "X-Request-ID"
    assert other.status_code == 200  # CORS is the browser's to enforce on simple requests
    assert "access-control-allow-origin" not in other.headers


async def test_gateway_errors_carry_cors_headers_so_the_page_can_read_them(upstream):
    server, _ = upstream
    auth = {"type": "api_key", "keys": {"k": hash_api_key("k")}}
    async with (
        run_gateway(route("c", "/c", server.url, cors=CORS, auth=auth)) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        response = await client.get("/c/echo/x", headers={"origin": APP})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == APP


async def test_plain_options_on_a_route_that_does_not_allow_it_is_still_405(upstream):
    server, stats = upstream
    spec = route("c", "/c", server.url, cors=CORS, methods=["GET"])
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.options("/c/echo/x")
    assert response.status_code == 405
    assert sum(stats.requests.values()) == 0
