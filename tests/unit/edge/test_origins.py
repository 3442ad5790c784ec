"""The WebSocket origin check: the route's CORS origins, or same-origin without a CORS policy."""

from __future__ import annotations

import httpx
import pytest

from app.config.edge import Cors
from app.config.settings import Settings
from app.edge.origins import OriginPolicy, WebSocketOriginFilter, same_origin
from app.errors import Forbidden
from app.proxy.exchange import Exchange
from app.proxy.routing import CompiledRoute

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        (b"http://gatehouse.test", b"gatehouse.test", True),
        (b"http://gatehouse.test", b"gatehouse.test:80", True),
        (b"https://gatehouse.test", b"gatehouse.test:443", True),
        (b"HTTPS://Gatehouse.Test:8443", b"gatehouse.test:8443", True),
        (b"http://[::1]:8000", b"[::1]:8000", True),
        (b"http://gatehouse.test", b"gatehouse.test:8080", False),
        (b"https://gatehouse.test", b"gatehouse.test:80", False),
        (b"http://evil.test", b"gatehouse.test", False),
        (b"http://gatehouse.test.evil.test", b"gatehouse.test", False),
        (b"null", b"gatehouse.test", False),
        (b"file://", b"gatehouse.test", False),
        (b"http://gatehouse.test", None, False),
    ],
)
def test_same_origin_compares_scheme_defaults_hosts_and_ports(origin, host, same):
    assert same_origin(origin, host) is same


def test_the_policy_allows_listed_origins_and_full_regex_matches_only():
    policy = OriginPolicy(Cors(allow_origins=["https://app.test"], allow_origin_regex=r"https://[a-z]+\.shop\.test"))
    assert policy.allows(b"https://app.test")
    assert policy.allows(b"https://north.shop.test")
    assert not policy.allows(b"https://north.shop.test.evil.test")
    assert not policy.allows(b"http://app.test")
    assert OriginPolicy(Cors(allow_origins=["*"])).allows(b"http://anything.test")


def exchange(*headers):
    settings = Settings(routes=[{"name": "live", "prefix": "/live", "upstream": "http://127.0.0.1:9"}])
    route = CompiledRoute.compile(settings.routes[0], settings.timeout, *settings.policies_for(settings.routes[0]))
    return Exchange(route, "GET", httpx.URL("http://127.0.0.1:9/"), list(headers))


async def passed(_exchange):
    return httpx.Response(101)


async def test_without_a_cors_policy_only_the_requested_host_may_connect():
    check = WebSocketOriginFilter("live", None)
    host = (b"x-forwarded-host", b"gatehouse.test:8000")
    assert (await check(exchange(host, (b"origin", b"http://gatehouse.test:8000")), passed)).status_code == 101
    assert (await check(exchange(host), passed)).status_code == 101  # not a browser: auth decides
    with pytest.raises(Forbidden, match="may not open WebSockets"):
        await check(exchange(host, (b"origin", b"http://other.test:8000")), passed)


async def test_with_a_cors_policy_its_origins_decide():
    check = WebSocketOriginFilter("live", OriginPolicy(Cors(allow_origins=["https://app.test"])))
    host = (b"x-forwarded-host", b"gatehouse.test")
    assert (await check(exchange(host, (b"origin", b"https://app.test")), passed)).status_code == 101
    with pytest.raises(Forbidden):
        await check(exchange(host, (b"origin", b"http://gatehouse.test")), passed)
