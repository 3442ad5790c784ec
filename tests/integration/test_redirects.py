"""Upstream redirects reach the client unfollowed; Locations on the upstream map onto the gateway."""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qs

import httpx
import pytest

from tests.gateway import route, run_gateway
from tests.servers import run_uvicorn

pytestmark = pytest.mark.anyio


def redirecting_upstream(hits: Counter[str]):
    """Answers any path with ``status`` (default 302) and ``Location: <to>``; counts paths."""

    async def app(scope, receive, send):
        assert scope["type"] == "http"
        await receive()
        hits[scope["path"]] += 1
        query = parse_qs(scope["query_string"].decode(), keep_blank_values=True)
        status = int(query.get("status", ["302"])[0])
        headers = [(b"location", query["to"][0].encode()), (b"content-length", b"0")] if "to" in query else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return app


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_upstream_redirect_is_passed_through_not_followed(upstream, status):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/redirect", params={"status": status, "to": "/echo"})
    assert response.status_code == status
    assert response.headers["location"] == "/up/echo"
    assert stats.requests["/redirect"] == 1
    assert stats.requests["/echo"] == 0  # the gateway did not follow it


async def test_absolute_location_on_the_upstream_origin_is_rewritten_to_the_prefix(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/redirect")  # Location: <upstream origin>/echo
    assert response.status_code == 302
    assert response.headers["location"] == "/up/echo"
    assert stats.requests["/echo"] == 0


async def test_location_outside_the_upstream_is_untouched(upstream):
    server, _ = upstream
    elsewhere = [
        "https://example.org/echo",
        f"http://127.0.0.1:{server.port + 1}/echo",  # same host, another port
        f"https://127.0.0.1:{server.port}/echo",  # same authority, another scheme
        "//example.org/echo",  # network-path reference
        "relative/echo",
    ]
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        for location in elsewhere:
            response = await client.get(f"{gw.url}/up/redirect", params={"to": location})
            assert response.status_code == 302
            assert response.headers["location"] == location


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        pytest.param("{origin}/base/home", "/app/home", id="absolute-url"),
        pytest.param("{origin}/base/home?next=%2Fx#top", "/app/home?next=%2Fx#top", id="absolute-url-query-fragment"),
        pytest.param("{origin}/base", "/app", id="absolute-url-base-itself"),
        pytest.param("/base/home?x=1", "/app/home?x=1", id="absolute-path"),
        pytest.param("/base/", "/app/", id="absolute-path-base-slash"),
        pytest.param("/other/home", "/other/home", id="outside-base-path"),
        pytest.param("{origin}/basement", "{origin}/basement", id="base-path-is-whole-segments"),
        pytest.param("https://example.org/base/home", "https://example.org/base/home", id="other-origin"),
    ],
)
async def test_location_under_the_upstream_base_path_maps_onto_the_route_prefix(location, expected):
    hits: Counter[str] = Counter()
    async with run_uvicorn(redirecting_upstream(hits), lifespan="off") as server:
        location, expected = (text.format(origin=server.url) for text in (location, expected))
        async with run_gateway(route("app", "/app", f"{server.url}/base")) as gw, httpx.AsyncClient() as client:
            response = await client.get(f"{gw.url}/app/login", params={"to": location})
    assert response.status_code == 302
    assert response.headers["location"] == expected
    assert hits == Counter({"/base/login": 1})


async def test_location_is_kept_as_is_when_the_prefix_is_not_stripped():
    hits: Counter[str] = Counter()
    async with run_uvicorn(redirecting_upstream(hits), lifespan="off") as server:
        app_route = route("app", "/app", server.url, strip_prefix=False)
        async with run_gateway(app_route) as gw, httpx.AsyncClient() as client:
            response = await client.get(f"{gw.url}/app/login", params={"to": f"{server.url}/app/home"})
    assert response.status_code == 302
    assert response.headers["location"] == "/app/home"


async def test_created_location_on_the_upstream_is_rewritten_too():
    hits: Counter[str] = Counter()
    async with run_uvicorn(redirecting_upstream(hits)) as up:
        location = f"{up.url}/v1/items/7"
        async with run_gateway(route("items", "/api/items", f"{up.url}/v1")) as gw, httpx.AsyncClient() as client:
            response = await client.post(f"{gw.url}/api/items/new", params={"status": "201", "to": location})
    assert response.status_code == 201
    assert response.headers["location"] == "/api/items/items/7"
