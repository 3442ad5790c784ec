"""One reading of every path: what an upstream that decodes before routing would make of it.

The upstream here is a real Starlette app under uvicorn. Like Flask, Express and
most frameworks, it routes on the percent-decoded path: ``/svc/admin%2Fx``
reaches its ``/svc/admin`` handler. Gatehouse has an open route ``/svc`` and a
route ``/svc/admin`` that needs an API key, both to that upstream; every path
below that some upstream could read as ``/svc/admin/...`` must be refused with
``ambiguous-path`` before anything is forwarded.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.config.hashing import hash_api_key
from tests.gateway import route, run_gateway
from tests.servers import LOOPBACK, RawResponse, RunningServer, parse_response, raw_http, run_uvicorn

pytestmark = pytest.mark.anyio

KEY = "admin-key"


@contextlib.asynccontextmanager
async def decoding_upstream() -> AsyncIterator[tuple[RunningServer, list[tuple[str, str]]]]:
    """A Starlette app that routes on the decoded path; records (handler, raw path) per request."""
    seen: list[tuple[str, str]] = []

    def handler(name: str):
        async def endpoint(request: Request) -> JSONResponse:
            seen.append((name, request.scope["raw_path"].decode("latin-1")))
            return JSONResponse({"handler": name, "path": request.url.path})

        return endpoint

    app = Starlette(
        routes=[
            Route("/svc/admin/{rest:path}", handler("admin")),
            Route("/admin/{rest:path}", handler("root-admin")),
            Route("/svc/{rest:path}", handler("public")),
        ]
    )
    async with run_uvicorn(app, log_level="warning") as server:
        yield server, seen


def routes(upstream_url: str, **svc_options):
    auth = {"type": "api_key", "keys": {"ops": hash_api_key(KEY)}}
    return (
        route("svc", "/svc", upstream_url, strip_prefix=False, **svc_options),
        route("admin", "/svc/admin", upstream_url, strip_prefix=False, auth=auth),
    )


async def get(port: int, target: bytes) -> tuple[bytes, RawResponse]:
    request = b"GET " + target + b" HTTP/1.1\r\nHost: gatehouse.test\r\nConnection: close\r\n\r\n"
    data = await raw_http(LOOPBACK, port, request)
    return data, parse_response(data)


def assert_ambiguous(data: bytes, response: RawResponse) -> None:
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data[:200]
    assert response.header_values(b"content-type") == [b"application/problem+json"]
    problem = json.loads(response.body)
    assert problem["type"] == "urn:gatehouse:problem:ambiguous-path"
    assert problem["status"] == 400
    assert response.header_values(b"x-request-id") == [problem["request_id"].encode()]


async def test_encoded_slash_does_not_reach_the_protected_handler():
    # Before the fix: matched to the open route /svc, forwarded as /svc/admin%2Fx,
    # and served by the upstream's admin handler without a key.
    async with decoding_upstream() as (server, seen), run_gateway(*routes(server.url)) as gw:
        data, response = await get(gw.port, b"/svc/admin%2fx")
    assert_ambiguous(data, response)
    assert seen == []


OTHER_READINGS = [
    b"/svc/admin%5cx",  # encoded backslash
    b"/svc/admin\\x",  # raw backslash
    b"/svc/admin;x=1/x",  # ';' path parameter
    b"/svc/..;/admin/x",  # Tomcat's '..;'
    b"/svc/ADMIN/x",
    b"/svc/Admin/x",
    b"/svc/admin./x",  # trailing dot
    b"/svc/admin%20/x",  # trailing space
    b"/svc/%ef%bc%8e%ef%bc%8e/admin/x",  # fullwidth dots: NFKC '..'
    b"/svc/%ef%bd%81dmin/x",  # fullwidth 'a'
    b"/svc/admin%ef%bc%8fx",  # fullwidth solidus
    b"/svc/ADMIN%2fx",  # case and an encoded slash
    b"/svc/AdMiN;a=b./x",  # case, parameter and trailing dot together
]


async def test_every_other_reading_of_a_protected_path_is_refused():
    # One gateway for the whole list (each case is a separate connection), to keep the suite fast.
    async with decoding_upstream() as (server, seen), run_gateway(*routes(server.url)) as gw:
        for target in OTHER_READINGS:
            data, response = await get(gw.port, target)
            assert response.status == 400, (target, response.status, response.body)
            assert_ambiguous(data, response)
    assert seen == []


async def test_paths_with_one_reading_are_forwarded_unchanged():
    async with decoding_upstream() as (server, seen), run_gateway(*routes(server.url)) as gw:
        for target in (b"/svc/Orders/x", b"/svc/a;v=1/x", b"/svc/report.", b"/svc/caf%C3%A9", b"/svc/a%3Ab"):
            _, response = await get(gw.port, target)
            assert response.status == 200, (target, response.body)
        _, protected = await get(gw.port, b"/svc/admin/x")
    assert protected.status == 401
    assert seen == [
        ("public", "/svc/Orders/x"),
        ("public", "/svc/a;v=1/x"),
        ("public", "/svc/report."),
        ("public", "/svc/caf%C3%A9"),
        ("public", "/svc/a%3Ab"),
    ]


async def test_encoded_slashes_keep_forwards_them_unchanged():
    async with decoding_upstream() as (server, seen), run_gateway(*routes(server.url, encoded_slashes="keep")) as gw:
        _, response = await get(gw.port, b"/svc/files/a%2Fb")
    assert response.status == 200
    assert seen == [("public", "/svc/files/a%2Fb")]


async def test_encoded_slashes_decode_forwards_slashes_unless_the_route_changes():
    async with decoding_upstream() as (server, seen), run_gateway(*routes(server.url, encoded_slashes="decode")) as gw:
        _, response = await get(gw.port, b"/svc/files/a%2Fb%5Cc")
        data, refused = await get(gw.port, b"/svc/admin%2Fx")
    assert response.status == 200
    assert_ambiguous(data, refused)
    assert seen == [("public", "/svc/files/a/b/c")]


async def test_an_ignored_reading_is_not_checked():
    async with (
        decoding_upstream() as (server, seen),
        run_gateway(*routes(server.url, ignore_path_readings=["case"])) as gw,
    ):
        _, response = await get(gw.port, b"/svc/ADMIN/x")
    assert response.status == 200
    assert seen == [("public", "/svc/ADMIN/x")]


async def test_a_semicolon_dot_dot_may_not_leave_the_base_path():
    # Only one route: /api/..;/x has no other route to select, but Tomcat would
    # serve the upstream's /x, outside the route's base path /v1.
    async with decoding_upstream() as (server, seen), run_gateway(route("api", "/api", server.url + "/v1")) as gw:
        data, response = await get(gw.port, b"/api/..;/admin/x")
    assert_ambiguous(data, response)
    assert seen == []
