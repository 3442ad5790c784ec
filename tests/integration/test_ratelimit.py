"""Rate limits: in memory by default, in the real local Redis with redis_url, fail_open when it is down."""

from __future__ import annotations

import logging
import uuid

import http_sf
import httpx
import pytest

from app.config.hashing import hash_api_key
from tests.faults import refused_port
from tests.gateway import route, run_gateway

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/0"


def unique(name):
    # Redis outlives a test run: a fresh route name is a fresh budget.
    return f"{name}-{uuid.uuid4().hex[:12]}"


async def test_over_the_limit_is_429_with_retry_after_and_ratelimit_headers(upstream):
    server, stats = upstream
    spec = route("r", "/r", server.url, rate_limit={"limit": "3/minute"})
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        statuses = [(await client.get("/r/echo/x")).status_code for _ in range(3)]
        refused = await client.get("/r/echo/x")
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]
    assert stats.requests["/echo/x"] == 3
    assert structured(refused, "ratelimit-policy") == [("r-60s", {"q": 3, "w": 60})]
    assert structured(refused, "ratelimit") == [("r-60s", {"r": 0, "t": int(refused.headers["retry-after"])})]


def structured(response, field):
    """Every ``field`` line of ``response`` parsed as an RFC 9651 List (raises on a malformed one)."""
    values = response.headers.get_list(field)
    assert values, f"no {field} field"
    return [item for value in values for item in http_sf.parse(value.encode(), tltype="list")]


async def test_every_response_of_a_limited_route_carries_the_ratelimit_fields(upstream):
    server, _ = upstream
    spec = route("r", "/r", server.url, rate_limit={"limit": "4/minute;100/hour"}, methods=["GET"])
    async with (
        run_gateway(spec, route("free", "/free", server.url)) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        ok = await client.get("/r/echo/x")
        upstream_404 = await client.get("/r/status/404")
        upstream_503 = await client.get("/r/status/503")
        streamed = await client.get("/r/stream?chunks=3")
        refused = await client.get("/r/echo/x")
        unlimited = await client.get("/free/echo/x")
    answers = [ok, upstream_404, upstream_503, streamed]
    assert [r.status_code for r in answers] == [200, 404, 503, 200]
    policy = [("r-60s", {"q": 4, "w": 60}), ("r-3600s", {"q": 100, "w": 3600})]
    for n, response in enumerate(answers):
        assert structured(response, "ratelimit-policy") == policy
        current = structured(response, "ratelimit")
        assert [(name, p["r"]) for name, p in current] == [("r-60s", 3 - n), ("r-3600s", 99 - n)]
        assert 0 <= current[0][1]["t"] <= 60
    assert refused.status_code == 429
    assert structured(refused, "ratelimit") == [
        ("r-60s", {"r": 0, "t": int(refused.headers["retry-after"])}),
    ]
    assert "ratelimit" not in unlimited.headers and "ratelimit-policy" not in unlimited.headers


async def test_the_gateways_own_errors_on_a_limited_route_carry_the_fields(upstream):
    server, _ = upstream
    dead = route("dead", "/dead", f"http://127.0.0.1:{refused_port()}", rate_limit={"limit": "5/minute"})
    keyed = route(
        "keyed",
        "/keyed",
        server.url,
        auth={"type": "api_key", "keys": {"a": hash_api_key("key-a")}},
        rate_limit={"limit": "5/minute"},
    )
    async with run_gateway(dead, keyed) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        bad_gateway = await client.get("/dead/x")
        unauthorized = await client.get("/keyed/x")
    assert (bad_gateway.status_code, unauthorized.status_code) == (502, 401)
    assert bad_gateway.headers["content-type"] == "application/problem+json"
    assert structured(bad_gateway, "ratelimit") == [("dead-60s", {"r": 4, "t": 60})]
    # Keyed by IP, the limit runs before auth: the 401 counted and says so.
    assert structured(unauthorized, "ratelimit-policy") == [("keyed-60s", {"q": 5, "w": 60})]


async def test_limits_are_per_key_when_keyed_by_api_key(upstream):
    server, _ = upstream
    auth = {"type": "api_key", "keys": {"a": hash_api_key("key-a"), "b": hash_api_key("key-b")}}
    spec = route("r", "/r", server.url, auth=auth, rate_limit={"limit": "2/minute", "key": "api_key"})
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        a = [(await client.get("/r/echo/x", headers={"x-api-key": "key-a"})).status_code for _ in range(3)]
        b = [(await client.get("/r/echo/x", headers={"x-api-key": "key-b"})).status_code for _ in range(2)]
    assert a == [200, 200, 429]
    assert b == [200, 200]


async def test_limits_keyed_by_header_and_routes_have_separate_budgets(upstream):
    server, _ = upstream
    limit = {"limit": "1/minute", "key": "header:X-Tenant"}
    async with (
        run_gateway(route("one", "/one", server.url), route("two", "/two", server.url), rate_limit=limit) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        first = await client.get("/one/echo/x", headers={"x-tenant": "t1"})
        again = await client.get("/one/echo/x", headers={"x-tenant": "t1"})
        other_tenant = await client.get("/one/echo/x", headers={"x-tenant": "t2"})
        other_route = await client.get("/two/echo/x", headers={"x-tenant": "t1"})
    assert [first.status_code, again.status_code, other_tenant.status_code, other_route.status_code] == [
        200,
        429,
        200,
        200,
    ]


async def test_redis_storage_counts_in_the_real_redis(upstream):
    server, stats = upstream
    name = unique("redis")
    spec = route(name, "/r", server.url, rate_limit={"limit": "2/minute"})
    async with run_gateway(spec, redis_url=REDIS_URL) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        statuses = [(await client.get("/r/echo/x")).status_code for _ in range(3)]
        assert gw.state["edge"].rate_limits.shared
    assert statuses == [200, 200, 429]
    assert stats.requests["/echo/x"] == 2


async def test_unreachable_redis_fails_open_and_is_logged_once_per_interval(upstream, caplog):
    server, stats = upstream
    spec = route(unique("down"), "/r", server.url, rate_limit={"limit": "1/minute"})
    caplog.set_level(logging.ERROR, logger="gatehouse.edge")
    async with (
        run_gateway(spec, redis_url="redis://127.0.0.1:9/0", storage_error_log_interval=60) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        statuses = [(await client.get("/r/echo/x")).status_code for _ in range(4)]
    assert statuses == [200] * 4
    assert stats.requests["/echo/x"] == 4
    reports = [r for r in caplog.records if "rate-limit storage unreachable" in r.getMessage()]
    assert len(reports) == 1


async def test_unreachable_redis_with_fail_open_false_is_503(upstream):
    server, stats = upstream
    spec = route(unique("closed"), "/r", server.url, rate_limit={"limit": "1/minute", "fail_open": False})
    async with (
        run_gateway(spec, redis_url="redis://127.0.0.1:9/0") as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        response = await client.get("/r/echo/x")
    assert response.status_code == 503
    assert response.json()["type"] == "urn:gatehouse:problem:rate-limit-unavailable"
    assert stats.requests["/echo/x"] == 0
