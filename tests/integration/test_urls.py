"""Request targets over real sockets: what reaches the upstream, byte for byte, and what never does."""

from __future__ import annotations

import json

import pytest

from tests.gateway import RunningGateway, route, run_gateway
from tests.servers import LOOPBACK, RawResponse, parse_response, raw_http

pytestmark = pytest.mark.anyio


async def raw_get(gw: RunningGateway, target: bytes, *, method: bytes = b"GET") -> RawResponse:
    request = b"%s %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (method, target, LOOPBACK.encode(), gw.port)
    return parse_response(await raw_http(LOOPBACK, gw.port, request))


def echoed(response: RawResponse) -> dict:
    assert response.status == 200, response.body
    return json.loads(response.body)


def assert_problem(response: RawResponse, status: int, slug: str) -> dict:
    assert response.status == status, response.body
    assert response.header_values(b"content-type") == [b"application/problem+json"]
    problem = json.loads(response.body)
    assert problem["status"] == status
    assert problem["type"] == f"urn:gatehouse:problem:{slug}"
    return problem


async def test_raw_query_is_forwarded_byte_for_byte(upstream):
    server, _ = upstream
    query = b"b=2&a=1&a=1&s=%2F&p=a+b&u=|{}^&e=%zz&q=caf%C3%A9&n=%00&empty=&=x&&flag"
    async with run_gateway(route("api", "/api", server.url)) as gw:
        echo = echoed(await raw_get(gw, b"/api/echo?" + query))
    assert echo["query_string"].encode("latin-1") == query
    assert echo["raw_path"] == "/echo"


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        pytest.param(b"/api/echo/%41bc", "/echo/Abc", id="unreserved-escape-decodes"),
        pytest.param(b"/api/%65cho/x", "/echo/x", id="unreserved-escape-in-route"),
        pytest.param(b"/api/echo/a%20b", "/echo/a%20b", id="space-stays-escaped"),
        pytest.param(b"/api/echo/caf%C3%A9", "/echo/caf%C3%A9", id="utf8-stays-escaped"),
        pytest.param(b"/api/echo/a%3Fb%23c", "/echo/a%3Fb%23c", id="query-and-fragment-marks-stay-escaped"),
        pytest.param(b"/api/echo/~user-._", "/echo/~user-._", id="unreserved-plain"),
    ],
)
async def test_path_escapes_are_preserved_except_unreserved(upstream, sent, forwarded):
    server, _ = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        echo = echoed(await raw_get(gw, sent))
    assert echo["raw_path"] == forwarded


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        pytest.param(b"/api/echo/a%2Fb", "/echo/a%2Fb", id="encoded-slash-stays"),
        pytest.param(b"/api/echo/a%2fb", "/echo/a%2Fb", id="escape-hex-upper-cased"),
    ],
)
async def test_encoded_slashes_stay_encoded_on_a_route_that_keeps_them(upstream, sent, forwarded):
    server, _ = upstream
    async with run_gateway(route("api", "/api", server.url, encoded_slashes="keep")) as gw:
        echo = echoed(await raw_get(gw, sent))
    assert echo["raw_path"] == forwarded


async def test_encoded_slashes_are_refused_by_default(upstream):
    server, stats = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        assert_problem(await raw_get(gw, b"/api/echo/a%2Fb"), 400, "ambiguous-path")
    assert sum(stats.requests.values()) == 0


async def test_strip_prefix_joins_the_rest_onto_the_base_path(upstream):
    server, _ = upstream
    async with run_gateway(route("users", "/api/users", f"{server.url}/echo/v1")) as gw:
        echo = echoed(await raw_get(gw, b"/api/users/42?x=1"))
    assert echo["raw_path"] == "/echo/v1/42"
    assert echo["query_string"] == "x=1"


async def test_strip_prefix_false_keeps_the_prefix_after_the_base_path(upstream):
    server, _ = upstream
    async with run_gateway(route("echo", "/echo", f"{server.url}/echo/v1", strip_prefix=False)) as gw:
        echo = echoed(await raw_get(gw, b"/echo/42?x=1"))
    assert echo["raw_path"] == "/echo/v1/echo/42"
    assert echo["query_string"] == "x=1"


async def test_strip_prefix_false_without_base_path_forwards_the_path_as_is(upstream):
    server, _ = upstream
    async with run_gateway(route("echo", "/echo", server.url, strip_prefix=False)) as gw:
        echo = echoed(await raw_get(gw, b"/echo/a/b?x=1"))
    assert echo["raw_path"] == "/echo/a/b"


async def test_longest_whole_segment_prefix_wins(upstream):
    server, _ = upstream
    routes = (
        route("api", "/api", f"{server.url}/echo/short"),
        route("users", "/api/users", f"{server.url}/echo/long"),
    )
    async with run_gateway(*routes) as gw:
        nested = echoed(await raw_get(gw, b"/api/users/1"))
        sibling = echoed(await raw_get(gw, b"/api/usersx/1"))
    assert nested["raw_path"] == "/echo/long/1"
    assert sibling["raw_path"] == "/echo/short/usersx/1"


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(b"/api/../../etc/passwd", id="dot-dot-above-root"),
        pytest.param(b"/api/../admin", id="dot-dot-out-of-route"),
        pytest.param(b"/api/%2e%2e/admin", id="encoded-dot-dot"),
        pytest.param(b"/api/%2E%2e/admin", id="encoded-dot-dot-mixed-case"),
        pytest.param(b"/api/.%2e/admin", id="half-encoded-dot-dot"),
        pytest.param(b"/api/echo/..%2f..%2fadmin", id="encoded-slash-hides-dots"),
        pytest.param(b"/api/echo/%2e%2e%2fadmin", id="fully-encoded-traversal"),
        pytest.param(b"/api/..\\admin", id="backslash"),
        pytest.param(b"/api/echo/..%5c..%5cadmin", id="encoded-backslash"),
        pytest.param(b"/api/%c0%ae%c0%ae/admin", id="overlong-utf8-dots"),
        pytest.param(b"/api/echo/%c0%af", id="overlong-utf8-slash"),
        pytest.param(b"/api/echo/a%00b", id="nul"),
        pytest.param(b"/api/echo/a%0d%0aX-Injected:%20yes", id="crlf"),
        pytest.param(b"/api/echo/%zz", id="malformed-escape"),
        pytest.param(b"/api/echo/%4", id="truncated-escape"),
        pytest.param(b"/api/echo/%ff", id="invalid-utf8"),
    ],
)
async def test_hostile_paths_are_refused_and_nothing_is_forwarded(upstream, target):
    server, stats = upstream
    async with run_gateway(route("api", "/api", server.url), route("admin", "/admin", server.url)) as gw:
        response = await raw_get(gw, target)
    problem = assert_problem(response, 400, "bad-request")
    assert problem["request_id"] == response.header_values(b"x-request-id")[0].decode()
    assert sum(stats.requests.values()) == 0


async def test_dot_segment_inside_the_route_is_resolved_before_forwarding(upstream):
    server, stats = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        up_and_back = echoed(await raw_get(gw, b"/api/a/../echo"))
        single_dot = echoed(await raw_get(gw, b"/api/./echo/./x"))
        encoded_single_dot = echoed(await raw_get(gw, b"/api/%2e/echo/y"))
    assert up_and_back["raw_path"] == "/echo"
    assert single_dot["raw_path"] == "/echo/x"
    assert encoded_single_dot["raw_path"] == "/echo/y"
    assert set(stats.requests) == {"/echo", "/echo/x", "/echo/y"}


async def test_repeated_slashes_are_merged(upstream):
    server, _ = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        inner = echoed(await raw_get(gw, b"/api//echo///a//b?x=//"))
        leading = echoed(await raw_get(gw, b"//api/echo"))
    assert inner["raw_path"] == "/echo/a/b"
    assert inner["query_string"] == "x=//"  # the query is never touched
    assert leading["raw_path"] == "/echo"


async def test_prefix_with_and_without_trailing_slash_both_reach_the_upstream(upstream):
    server, stats = upstream
    async with run_gateway(route("api", "/api", f"{server.url}/echo")) as gw:
        bare = await raw_get(gw, b"/api")
        slash = await raw_get(gw, b"/api/")
    for response in (bare, slash):
        assert response.status == 200, response.body
        assert response.header_values(b"location") == []
    assert json.loads(bare.body)["raw_path"] == "/echo"
    assert json.loads(slash.body)["raw_path"] == "/echo/"
    assert stats.requests["/echo"] == 1 and stats.requests["/echo/"] == 1


@pytest.mark.parametrize("target", [b"/nope", b"/apiary", b"/", b"/API/echo"])
async def test_unconfigured_path_is_404_problem_json(upstream, target):
    server, stats = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        response = await raw_get(gw, target)
    assert_problem(response, 404, "route-not-found")
    assert sum(stats.requests.values()) == 0


async def test_absolute_form_target_is_routed_by_its_path_never_to_the_host_it_names(upstream):
    # RFC 9112 3.2.2: a server must accept absolute-form; the named host must not become an upstream.
    server, stats = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        response = await raw_get(gw, b"http://example.com/api/echo?x=1")
    echo = echoed(response)
    assert echo["raw_path"] == "/echo"
    assert echo["query_string"] == "x=1"
    assert dict(echo["headers"])["host"] == f"{LOOPBACK}:{server.port}"
    assert stats.requests["/echo"] == 1


@pytest.mark.parametrize(
    ("method", "target"),
    [
        pytest.param(b"OPTIONS", b"*", id="asterisk-form"),
        pytest.param(b"GET", b"*", id="asterisk-with-get"),
        pytest.param(b"CONNECT", b"example.com:443", id="authority-form"),
        pytest.param(b"GET", b"api/echo", id="no-leading-slash"),
        pytest.param(b"GET", b"/api/echo/caf\xc3\xa9", id="raw-utf8"),
        pytest.param(b"GET", b"/api/echo/\x7f", id="raw-del"),
    ],
)
async def test_weird_request_targets_get_a_4xx_and_the_gateway_keeps_serving(upstream, method, target):
    server, stats = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw:
        response = await raw_get(gw, target, method=method)
        assert 400 <= response.status < 500, response.body
        assert b"Traceback" not in response.body
        assert sum(stats.requests.values()) == 0
        after = await raw_get(gw, b"/api/echo")
    assert after.status == 200
