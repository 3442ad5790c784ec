"""Rate limits as a filter, on the in-memory storage: budgets per key, the 429's headers, storage failures."""

from __future__ import annotations

import logging

import anyio
import http_sf
import httpx
import pytest

from app.config.settings import Settings
from app.edge.ratelimit import RateLimitFilter, RateLimitStore
from app.errors import RateLimited, RateLimitUnavailable, UpstreamError
from app.proxy.exchange import Exchange
from app.proxy.routing import CompiledRoute

pytestmark = pytest.mark.anyio


def compile_route(rate_limit, **options):
    route_spec = {"name": "api", "prefix": "/api", "upstream": "http://127.0.0.1:9", "rate_limit": rate_limit}
    settings = Settings(routes=[{**route_spec, **options}])
    return CompiledRoute.compile(settings.routes[0], settings.timeout, *settings.policies_for(settings.routes[0]))


@pytest.fixture
async def store():
    s = RateLimitStore(Settings())  # no redis_url: in memory
    assert s.timeout is None and not s.shared
    yield s
    await s.aclose()


def limiter(store, limit="2/minute", **spec):
    route = compile_route({"limit": limit, **spec})
    return route, RateLimitFilter(route.name, route.edge.rate_limit, lambda: store)


def exchange_for(route, client_ip="203.0.113.7", headers=(), identity=None):
    return Exchange(
        route, "GET", httpx.URL("http://127.0.0.1:9/x"), list(headers), client_ip=client_ip, identity=identity
    )


class Upstream:
    def __init__(self):
        self.calls = 0

    async def __call__(self, exchange):  # noqa: ARG002
        self.calls += 1
        return httpx.Response(200)


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
async def test_third_request_in_a_minute_is_refused_with_retry_after_and_ratelimit_headers(store, strategy):
    route, f = limiter(store, strategy=strategy)
    upstream = Upstream()
    for _ in range(2):
        assert (await f(exchange_for(route), upstream)).status_code == 200
    with pytest.raises(RateLimited) as raised:
        await f(exchange_for(route), upstream)
    assert upstream.calls == 2
    assert raised.value.status == 429
    # The window opened at the first hit: 60s, or 59s if this ran slower than a second.
    reset = dict(raised.value.headers)[b"retry-after"]
    assert reset in (b"60", b"59")
    assert raised.value.detail == f"Route 'api' allows 2 request(s) per minute; retry in {reset.decode()}s."
    assert raised.value.headers == [
        (b"retry-after", reset),
        (b"ratelimit-policy", b'"api-60s";q=2;w=60'),
        (b"ratelimit", b'"api-60s";r=0;t=' + reset),
        (b"ratelimit-limit", b"2"),
        (b"ratelimit-remaining", b"0"),
        (b"ratelimit-reset", reset),
    ]


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
async def test_allowed_responses_carry_the_policy_and_what_remains_of_it(store, strategy):
    route, f = limiter(store, limit="3/minute;10/hour", strategy=strategy)
    fields = []
    for _ in range(3):
        response = await f(exchange_for(route), Upstream())
        fields.append((response.headers["ratelimit-policy"], response.headers["ratelimit"]))
    assert {policy for policy, _ in fields} == {'"api-60s";q=3;w=60, "api-3600s";q=10;w=3600'}
    remaining = [http_sf.parse(current.encode(), tltype="list") for _, current in fields]
    assert [[(name, params["r"]) for name, params in items] for items in remaining] == [
        [("api-60s", 2), ("api-3600s", 9)],
        [("api-60s", 1), ("api-3600s", 8)],
        [("api-60s", 0), ("api-3600s", 7)],
    ]
    assert all(55 <= items[0][1]["t"] <= 60 and 3500 <= items[1][1]["t"] <= 3600 for items in remaining)


async def test_the_gateways_own_errors_downstream_of_the_limit_carry_the_fields_too(store):
    route, f = limiter(store, limit="5/minute")

    async def failing(exchange):  # noqa: ARG001
        raise UpstreamError("Route 'api': could not connect to the upstream.")

    with pytest.raises(UpstreamError) as raised:
        await f(exchange_for(route), failing)
    headers = dict(raised.value.headers)
    assert headers[b"ratelimit-policy"] == b'"api-60s";q=5;w=60'
    assert http_sf.parse(headers[b"ratelimit"], tltype="list")[0][1]["r"] == 4


async def test_the_upstreams_own_ratelimit_fields_are_kept_and_the_gateways_added(store):
    route, f = limiter(store, limit="5/minute")

    async def upstream(exchange):  # noqa: ARG001
        return httpx.Response(200, headers=[("RateLimit-Policy", '"origin";q=100;w=1'), ("RateLimit", '"origin";r=99')])

    response = await f(exchange_for(route), upstream)
    policies = [name for value in response.headers.get_list("ratelimit-policy") for name, _ in parse_list(value)]
    assert policies == ["origin", "api-60s"]
    assert [name for value in response.headers.get_list("ratelimit") for name, _ in parse_list(value)] == [
        "origin",
        "api-60s",
    ]


def parse_list(value):
    return http_sf.parse(value.encode(), tltype="list")


async def test_each_client_ip_has_its_own_budget(store):
    route, f = limiter(store)
    upstream = Upstream()
    for _ in range(2):
        await f(exchange_for(route, "203.0.113.7"), upstream)
    with pytest.raises(RateLimited):
        await f(exchange_for(route, "203.0.113.7"), upstream)
    for _ in range(2):
        await f(exchange_for(route, "198.51.100.1"), upstream)
    with pytest.raises(RateLimited):
        await f(exchange_for(route, "198.51.100.1"), upstream)
    assert upstream.calls == 4


async def test_routes_with_the_same_key_have_separate_budgets(store):
    route_a, f_a = limiter(store, limit="1/minute")
    spec = {"limit": "1/minute"}
    route_b = compile_route(spec, name="other", prefix="/other")
    f_b = RateLimitFilter(route_b.name, route_b.edge.rate_limit, lambda: store)
    upstream = Upstream()
    await f_a(exchange_for(route_a), upstream)
    await f_b(exchange_for(route_b), upstream)
    with pytest.raises(RateLimited):
        await f_a(exchange_for(route_a), upstream)
    assert upstream.calls == 2


async def test_header_key_gives_each_tenant_a_budget_and_lumps_requests_without_it(store):
    route, f = limiter(store, limit="1/minute", key="header:X-Tenant")
    upstream = Upstream()
    await f(exchange_for(route, "10.0.0.1", [(b"x-tenant", b"acme")]), upstream)
    with pytest.raises(RateLimited):
        await f(exchange_for(route, "10.0.0.2", [(b"x-tenant", b"acme")]), upstream)  # another IP, same tenant
    await f(exchange_for(route, "10.0.0.1", [(b"x-tenant", b"globex")]), upstream)
    await f(exchange_for(route, "10.0.0.1"), upstream)
    with pytest.raises(RateLimited):
        await f(exchange_for(route, "10.0.0.3"), upstream)  # no header: one shared "-" budget
    assert upstream.calls == 3


async def test_api_key_key_counts_per_identity(store):
    auth = {"type": "api_key", "keys": {"k": "sha256:" + "0" * 64}}
    route = compile_route({"limit": "1/minute", "key": "api_key"}, auth=auth)
    f = RateLimitFilter(route.name, route.edge.rate_limit, lambda: store)
    upstream = Upstream()
    await f(exchange_for(route, "10.0.0.1", identity="mobile"), upstream)
    await f(exchange_for(route, "10.0.0.1", identity="web"), upstream)
    with pytest.raises(RateLimited):
        await f(exchange_for(route, "10.0.0.2", identity="mobile"), upstream)
    assert upstream.calls == 2


async def test_with_several_limits_the_first_one_exhausted_is_reported(store):
    route, f = limiter(store, limit="5/minute;1/second")
    upstream = Upstream()
    await f(exchange_for(route), upstream)
    with pytest.raises(RateLimited) as raised:
        await f(exchange_for(route), upstream)
    assert raised.value.detail == "Route 'api' allows 1 request(s) per second; retry in 1s."
    assert dict(raised.value.headers)[b"ratelimit-limit"] == b"1"


async def failing_hit(*args, **kwargs):  # noqa: ARG001
    raise ConnectionError("storage down")


async def test_failing_storage_lets_requests_through_when_fail_open(store, monkeypatch, caplog):
    route, f = limiter(store, fail_open=True)
    monkeypatch.setattr(store.strategy("moving-window"), "hit", failing_hit)
    upstream = Upstream()
    with caplog.at_level(logging.ERROR, logger="gatehouse.edge"):
        for _ in range(3):
            assert (await f(exchange_for(route), upstream)).status_code == 200
    assert upstream.calls == 3
    # Logged once per storage_error_log_interval, not per request.
    assert [r.getMessage() for r in caplog.records] == [
        "rate-limit storage unreachable (ConnectionError: storage down); applying fail_open per route; "
        "next report in 60s"
    ]


async def test_failing_storage_is_503_when_not_fail_open(store, monkeypatch):
    route, f = limiter(store, fail_open=False)
    monkeypatch.setattr(store.strategy("moving-window"), "hit", failing_hit)
    upstream = Upstream()
    with pytest.raises(RateLimitUnavailable) as raised:
        await f(exchange_for(route), upstream)
    assert raised.value.status == 503
    assert raised.value.detail == "Route 'api': the rate-limit storage is unreachable."
    assert raised.value.headers == [(b"retry-after", b"1")]
    assert upstream.calls == 0


async def test_storage_slower_than_its_timeout_counts_as_a_failure(store, monkeypatch):
    async def hanging_hit(*args, **kwargs):  # noqa: ARG001
        await anyio.sleep(10)

    route, f = limiter(store, fail_open=False)
    monkeypatch.setattr(store.strategy("moving-window"), "hit", hanging_hit)
    monkeypatch.setattr(store, "timeout", 0.05)  # as with Redis: redis_timeout * 2
    with anyio.fail_after(2), pytest.raises(RateLimitUnavailable):
        await f(exchange_for(route), Upstream())
