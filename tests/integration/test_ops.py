"""Ops endpoints under ``ops_prefix``: health, readiness, the route table, problem+json 404s."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter

from app.assembly.ops import AdminDep
from tests.gateway import OPS_TOKEN, bearer, route, run_gateway

pytestmark = pytest.mark.anyio

SECRET = "s3cret"


def assert_problem_404(response: httpx.Response) -> None:
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 404
    assert problem["type"] == "urn:gatehouse:problem:not-found"
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text


async def test_healthz_is_200(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/_gatehouse/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert sum(stats.requests.values()) == 0


async def test_healthz_is_200_with_no_routes_at_all():
    async with run_gateway() as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/_gatehouse/healthz")
    assert response.status_code == 200


async def test_readyz_is_200_while_serving(upstream):
    server, _ = upstream
    routes = (route("a", "/a", server.url), route("b", "/b", server.url))
    async with run_gateway(*routes) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/_gatehouse/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "routes": 2, "degraded": {}}


async def test_routes_lists_routes_with_resolved_timeouts(upstream):
    server, _ = upstream
    routes = (
        route("users", "/api/users", f"{server.url}/v1", timeout={"read": 2.5}, methods=["get", "POST"]),
        route("plain", "/plain", server.url, strip_prefix=False, preserve_host=True, max_body_bytes=1024),
    )
    async with run_gateway(*routes, timeout={"connect": 1.5, "pool": 0.5}, admin_token=OPS_TOKEN) as gw:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{gw.url}/_gatehouse/routes", headers=bearer())
    assert response.status_code == 200
    listed = {entry["name"]: entry for entry in response.json()["routes"]}
    assert set(listed) == {"users", "plain"}
    users, plain = listed["users"], listed["plain"]
    assert users["prefix"] == "/api/users"
    assert users["upstream"] == f"{server.url}/v1"
    assert users["methods"] == ["GET", "POST"]
    assert users["timeout"] == {"connect": 1.5, "read": 2.5, "write": 30.0, "pool": 0.5}
    assert plain["timeout"] == {"connect": 1.5, "read": 30.0, "write": 30.0, "pool": 0.5}
    assert plain["strip_prefix"] is False
    assert plain["preserve_host"] is True
    assert plain["max_body_bytes"] == 1024


async def test_routes_never_shows_header_values(upstream):
    server, _ = upstream
    secret_route = route(
        "private",
        "/private",
        server.url,
        request_headers={"set": {"Authorization": f"Bearer {SECRET}", "X-Api-Key": f"{SECRET}-key"}},
        response_headers={"set": {"X-Internal-Token": f"{SECRET}-token"}},
    )
    async with run_gateway(secret_route, admin_token=OPS_TOKEN) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/_gatehouse/routes", headers=bearer())
    assert response.status_code == 200
    assert SECRET not in response.text
    assert SECRET not in str(response.headers)
    (entry,) = response.json()["routes"]
    assert entry["request_headers"]["set"] == ["Authorization", "X-Api-Key"]  # names only
    assert entry["response_headers"]["set"] == ["X-Internal-Token"]


async def test_custom_ops_prefix_serves_ops_and_the_default_prefix_is_proxied(upstream):
    server, stats = upstream
    async with (
        run_gateway(route("root", "/", server.url), ops_prefix="/ops/internal", admin_token=OPS_TOKEN) as gw,
        httpx.AsyncClient() as client,
    ):
        health = await client.get(f"{gw.url}/ops/internal/healthz")
        ready = await client.get(f"{gw.url}/ops/internal/readyz")
        listed = await client.get(f"{gw.url}/ops/internal/routes", headers=bearer())
        default = await client.get(f"{gw.url}/_gatehouse/healthz")
    assert health.status_code == 200
    assert ready.status_code == 200
    assert [entry["name"] for entry in listed.json()["routes"]] == ["root"]
    # Without the ops prefix it is an ordinary path, proxied to the catch-all route.
    assert default.status_code == 404
    assert default.json() == {"detail": "no test endpoint /_gatehouse/healthz"}
    assert stats.requests["/_gatehouse/healthz"] == 1
    assert stats.requests["/ops/internal/healthz"] == 0


# ("/_gatehouse/" is the ops page: tests/e2e/test_ops_page.py.)
@pytest.mark.parametrize("path", ["/_gatehouse/nope", "/_gatehouse", "/_gatehouse/healthz/extra"])
async def test_unknown_path_under_ops_prefix_is_404_problem_json_and_not_proxied(upstream, path):
    server, stats = upstream
    async with run_gateway(route("root", "/", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}{path}")
    assert_problem_404(response)
    assert sum(stats.requests.values()) == 0


async def test_ops_endpoints_refuse_other_methods_as_problem_json(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.post(f"{gw.url}/_gatehouse/healthz")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["allow"] == "GET"


async def test_admin_api_needs_the_bearer_token_and_is_off_without_one(upstream):
    probe = APIRouter()

    @probe.get("/_admin_probe")
    async def admin_probe(_admin: AdminDep) -> dict[str, bool]:
        return {"admin": True}

    server, _ = upstream
    token = "t" * 32
    async with run_gateway(route("up", "/up", server.url), admin_token=token) as gw, httpx.AsyncClient() as client:
        gw.app.include_router(probe, prefix="/_gatehouse")
        missing = await client.get(f"{gw.url}/_gatehouse/_admin_probe")
        wrong = await client.get(f"{gw.url}/_gatehouse/_admin_probe", headers={"authorization": "Bearer " + "x" * 32})
        right = await client.get(f"{gw.url}/_gatehouse/_admin_probe", headers={"authorization": f"Bearer {token}"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert right.json() == {"admin": True}
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        gw.app.include_router(probe, prefix="/_gatehouse")
        off = await client.get(f"{gw.url}/_gatehouse/_admin_probe", headers={"authorization": f"Bearer {token}"})
    assert off.status_code == 403 and "admin_token" in off.json()["detail"]


async def test_validation_errors_name_the_field_without_source_locations(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url), admin_token="t" * 32) as gw, httpx.AsyncClient() as client:
        probe = APIRouter()

        @probe.get("/_typed_probe")
        async def typed_probe(limit: int) -> dict[str, int]:
            return {"limit": limit}

        gw.app.include_router(probe, prefix="/_gatehouse")
        response = await client.get(f"{gw.url}/_gatehouse/_typed_probe?limit=x")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "query.limit" in detail and ".py" not in detail and "line" not in detail
