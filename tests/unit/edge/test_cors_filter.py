"""CORS as a filter: preflights answered here, the route's headers on answers and on gateway errors."""

from __future__ import annotations

import httpx
import pytest

from app.config.settings import Settings
from app.edge.cors import CorsFilter
from app.errors import Forbidden, MethodNotAllowed, RateLimited
from app.proxy.exchange import Exchange
from app.proxy.routing import CompiledRoute

pytestmark = pytest.mark.anyio

APP = "https://app.example.test"
CORS = {
    "allow_origins": [APP],
    "allow_origin_regex": r"https://[a-z]+\.shop\.test",
    "allow_methods": ["GET", "PUT"],
    "allow_headers": ["X-Trace", "X-Tenant"],
    "expose_headers": ["X-Request-ID", "X-Total"],
    "allow_credentials": True,
    "max_age": 120,
}


def cors_filter(cors=CORS, **options):
    route_spec = {"name": "api", "prefix": "/api", "upstream": "http://127.0.0.1:9", "cors": cors, **options}
    settings = Settings(routes=[route_spec])
    route = CompiledRoute.compile(settings.routes[0], settings.timeout, *settings.policies_for(settings.routes[0]))
    return route, CorsFilter(route, route.edge.cors)


def exchange_for(route, method, headers):
    return Exchange(route, method, httpx.URL("http://127.0.0.1:9/users"), list(headers))


def preflight(origin=APP, method=b"PUT", requested=b"x-trace, content-type"):
    headers = [(b"origin", origin.encode()), (b"access-control-request-method", method)]
    if requested is not None:
        headers.append((b"access-control-request-headers", requested))
    return headers


class Upstream:
    def __init__(self, response=None, error=None):
        self.calls = 0
        self._response = response
        self._error = error

    async def __call__(self, exchange):  # noqa: ARG002
        self.calls += 1
        if self._error is not None:
            raise self._error
        return self._response if self._response is not None else httpx.Response(200)


# Preflights


async def test_preflight_from_allowed_origin_is_answered_204_without_calling_upstream():
    route, f = cors_filter()
    upstream = Upstream()
    response = await f(exchange_for(route, "OPTIONS", preflight()), upstream)
    assert response.status_code == 204
    assert response.headers.multi_items() == [
        ("access-control-allow-origin", APP),
        ("access-control-allow-credentials", "true"),
        ("vary", "Origin"),
        ("access-control-allow-methods", "GET, PUT"),
        ("access-control-max-age", "120"),
        ("vary", "Access-Control-Request-Method, Access-Control-Request-Headers"),
        ("content-length", "0"),
        ("access-control-allow-headers", "X-Trace, X-Tenant"),
    ]
    assert response.content == b""
    assert upstream.calls == 0


async def test_preflight_from_an_origin_matching_the_regex_echoes_that_origin():
    route, f = cors_filter()
    response = await f(exchange_for(route, "OPTIONS", preflight("https://east.shop.test")), Upstream())
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://east.shop.test"


async def test_preflight_is_answered_even_on_a_route_that_does_not_allow_options():
    route, f = cors_filter(methods=["GET", "PUT"])
    upstream = Upstream()
    response = await f(exchange_for(route, "OPTIONS", preflight()), upstream)
    assert response.status_code == 204
    assert upstream.calls == 0


async def test_preflight_with_any_method_and_header_echoes_what_was_asked():
    route, f = cors_filter({"allow_origins": ["*"], "allow_methods": ["*"], "allow_headers": ["*"]})
    response = await f(exchange_for(route, "OPTIONS", preflight(method=b"patch", requested=b"X-A, x-b")), Upstream())
    assert response.headers.multi_items() == [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "PATCH"),
        ("access-control-max-age", "600"),
        ("vary", "Access-Control-Request-Method, Access-Control-Request-Headers"),
        ("content-length", "0"),
        ("access-control-allow-headers", "x-a, x-b"),
    ]


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        (preflight("https://evil.test"), "CORS: the origin 'https://evil.test' is not allowed on this route."),
        (
            preflight("https://east.shop.test.evil.test"),
            "CORS: the origin 'https://east.shop.test.evil.test' is not allowed on this route.",
        ),
        (preflight(APP + ".evil.test"), f"CORS: the origin '{APP}.evil.test' is not allowed on this route."),
        (preflight(method=b"DELETE"), "CORS: the method 'DELETE' is not allowed on this route."),
        (
            preflight(requested=b"x-trace, X-Secret, x-other"),
            "CORS: the header(s) x-secret, x-other are not allowed on this route.",
        ),
    ],
    ids=["other-origin", "regex-must-match-whole-origin", "origin-prefix", "method", "header"],
)
async def test_disallowed_preflight_is_forbidden_without_cors_headers(headers, detail):
    route, f = cors_filter()
    upstream = Upstream()
    with pytest.raises(Forbidden) as raised:
        await f(exchange_for(route, "OPTIONS", headers), upstream)
    assert raised.value.status == 403
    assert raised.value.detail == detail
    assert raised.value.headers == []
    assert upstream.calls == 0


async def test_safelisted_request_headers_need_no_listing():
    route, f = cors_filter()
    requested = b"Accept, accept-language, content-language, content-type"
    response = await f(exchange_for(route, "OPTIONS", preflight(requested=requested)), Upstream())
    assert response.status_code == 204


async def test_plain_options_on_a_route_that_does_not_allow_it_is_405():
    route, f = cors_filter(methods=["GET"])
    upstream = Upstream()
    with pytest.raises(MethodNotAllowed) as raised:
        await f(exchange_for(route, "OPTIONS", [(b"origin", APP.encode())]), upstream)
    assert raised.value.headers == [(b"allow", b"GET")]
    assert upstream.calls == 0


async def test_plain_options_on_a_route_that_allows_it_goes_upstream_with_cors_headers():
    route, f = cors_filter()
    upstream = Upstream()
    response = await f(exchange_for(route, "OPTIONS", [(b"origin", APP.encode())]), upstream)
    assert upstream.calls == 1
    assert response.headers["access-control-allow-origin"] == APP


# Actual requests


async def test_simple_request_from_allowed_origin_gets_the_routes_headers_replacing_the_upstreams():
    route, f = cors_filter()
    upstream_response = httpx.Response(
        200,
        headers=[
            ("content-type", "application/json"),
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "DELETE"),
            ("access-control-allow-headers", "X-Secret"),
            ("access-control-max-age", "86400"),
            ("access-control-expose-headers", "X-Internal"),
            ("access-control-allow-credentials", "false"),
            ("vary", "Accept-Encoding"),
        ],
    )
    response = await f(exchange_for(route, "GET", [(b"origin", APP.encode())]), Upstream(upstream_response))
    assert sorted(response.headers.multi_items()) == [
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-origin", APP),
        ("access-control-expose-headers", "X-Request-ID, X-Total"),
        ("content-type", "application/json"),
        ("vary", "Accept-Encoding, Origin"),
    ]


async def test_any_origin_without_credentials_answers_star_and_no_vary():
    route, f = cors_filter({"allow_origins": ["*"]})
    response = await f(exchange_for(route, "GET", [(b"origin", b"https://anyone.test")]), Upstream())
    assert response.headers.multi_items() == [("access-control-allow-origin", "*")]


async def test_request_from_an_origin_not_allowed_is_passed_through_without_cors_headers():
    route, f = cors_filter()
    upstream = Upstream(httpx.Response(200, headers=[("content-type", "text/plain")]))
    response = await f(exchange_for(route, "GET", [(b"origin", b"https://evil.test")]), upstream)
    assert upstream.calls == 1
    assert response.status_code == 200
    # Vary: Origin, so a shared cache never serves this answer to an allowed origin (or the reverse).
    assert response.headers.multi_items() == [("content-type", "text/plain"), ("vary", "Origin")]


async def test_request_without_origin_gets_no_cors_headers_but_varies_on_origin():
    route, f = cors_filter()
    upstream = Upstream(httpx.Response(200, headers=[("content-type", "text/plain")]))
    response = await f(exchange_for(route, "GET", []), upstream)
    assert response.headers.multi_items() == [("content-type", "text/plain"), ("vary", "Origin")]


async def test_upstreams_cors_headers_do_not_reach_an_origin_the_route_refuses():
    route, f = cors_filter()
    upstream = Upstream(httpx.Response(200, headers=[("access-control-allow-origin", "*")]))
    response = await f(exchange_for(route, "GET", [(b"origin", b"https://evil.test")]), upstream)
    assert "access-control-allow-origin" not in response.headers


async def test_gateway_error_raised_downstream_carries_the_cors_headers():
    route, f = cors_filter()
    refusal = RateLimited("slow down", headers=[(b"retry-after", b"7")])
    with pytest.raises(RateLimited) as raised:
        await f(exchange_for(route, "PUT", [(b"origin", APP.encode())]), Upstream(error=refusal))
    assert raised.value.headers == [
        (b"retry-after", b"7"),
        (b"access-control-allow-origin", APP.encode()),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
        (b"access-control-expose-headers", b"X-Request-ID, X-Total"),
    ]


async def test_gateway_error_for_an_origin_not_allowed_gets_no_cors_headers():
    route, f = cors_filter()
    refusal = RateLimited("slow down", headers=[(b"retry-after", b"7")])
    with pytest.raises(RateLimited) as raised:
        await f(exchange_for(route, "GET", [(b"origin", b"https://evil.test")]), Upstream(error=refusal))
    assert raised.value.headers == [(b"retry-after", b"7")]


async def test_each_origin_keeps_its_own_answer_however_many_origins_have_called(monkeypatch):
    monkeypatch.setattr("app.edge.cors._MAX_ORIGINS", 4)  # the per-origin answers are made once, and bounded
    route, f = cors_filter()
    origins = [f"https://shop{chr(97 + n)}.shop.test".replace("shop", "", 1) for n in range(10)]
    for _ in range(2):
        for origin in [APP, *origins]:
            upstream = Upstream(httpx.Response(200, headers={"vary": "Accept-Encoding"}))
            response = await f(exchange_for(route, "GET", [(b"origin", origin.encode())]), upstream)
            assert response.headers["access-control-allow-origin"] == origin
            assert response.headers["vary"] == "Accept-Encoding, Origin"
            with pytest.raises(RateLimited) as raised:
                await f(exchange_for(route, "GET", [(b"origin", origin.encode())]), Upstream(error=RateLimited("x")))
            assert (b"access-control-allow-origin", origin.encode()) in raised.value.headers
    assert len(f._answers) <= 4
