"""Config reload: the route table is swapped atomically under load; an invalid file changes nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
import yaml

from app.config.settings import Settings
from app.main import create_app
from app.serving.uvicorn_server import server_config
from tests.gateway import route, run_gateway
from tests.servers import RunningServer, run_uvicorn

pytestmark = pytest.mark.anyio

TOKEN = "reload-admin-token-0123456789"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
LOAD_SECONDS = 3.0  # upper bound: the load stops once the reloads are done
MAX_REQUESTS = 5000


def write(path: Path, upstream: str, *extra: str) -> None:
    routes = [{"name": "a", "prefix": "/a", "upstream": upstream}]
    routes += [{"name": name, "prefix": f"/{name}", "upstream": upstream} for name in extra]
    path.write_text(yaml.safe_dump({"routes": routes, "admin_token": TOKEN}), encoding="utf-8")


@contextlib.asynccontextmanager
async def gateway_from(path: Path) -> AsyncIterator[tuple[RunningServer, object]]:
    app = create_app(Settings(config=path))
    async with run_uvicorn(config=server_config(app, host="127.0.0.1", port=0, log_level="warning")) as server:
        yield server, app


async def test_ten_reloads_under_load_fail_no_request(upstream, tmp_path):
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    write(config, server.url)
    failures: list[str] = []
    done = 0
    reloads_done = anyio.Event()

    async def load(client: httpx.AsyncClient) -> None:
        nonlocal done
        with anyio.move_on_after(LOAD_SECONDS):
            while not reloads_done.is_set() and done < MAX_REQUESTS:
                response = await client.get(f"{gw.url}/a/echo/x")
                done += 1
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    async with gateway_from(config) as (gw, app), httpx.AsyncClient(timeout=5) as client:
        first = app.gateway.generation
        generations = []
        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(load, client)
            for n in range(10):
                write(config, server.url, *(["b"] if n % 2 == 0 else []))
                response = await client.post(f"{gw.url}/_gatehouse/reload", headers=ADMIN)
                assert response.status_code == 200, response.text
                generations.append(app.gateway.generation)
                if n == 8:  # this file adds route b: it serves at once
                    assert (await client.get(f"{gw.url}/b/echo/")).status_code == 200
                await anyio.sleep(0.05)
            reloads_done.set()
        # The last file (n = 9) has no route b; the one before had it.
        assert (await client.get(f"{gw.url}/b/echo/")).status_code == 404
        listed = (await client.get(f"{gw.url}/_gatehouse/routes", headers=ADMIN)).json()["routes"]
        with anyio.fail_after(5):
            while any(g.clients is None or not g.clients.closed for g in [first, *generations[:-1]]):
                await anyio.sleep(0.01)  # retired generations close once their requests finish
        assert not generations[-1].clients.closed
    assert failures == []
    assert done > 100  # the reloads really happened under load
    assert response.json() == {"generation": 11, "routes": ["a"], "restart_required": []}
    assert [r["name"] for r in listed] == ["a"]


async def test_invalid_reload_is_a_422_with_field_errors_and_the_old_routes_keep_serving(upstream, tmp_path):
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    write(config, server.url)
    async with gateway_from(config) as (gw, app), httpx.AsyncClient() as client:
        before = app.gateway.generation
        broken = {"routes": [{"name": "a", "prefix": "/a", "upstream": "ftp://nope"}, {"name": "x", "prefix": "y"}]}
        config.write_text(yaml.safe_dump(broken | {"admin_token": TOKEN}), encoding="utf-8")
        rejected = await client.post(f"{gw.url}/_gatehouse/reload", headers=ADMIN)
        still = await client.get(f"{gw.url}/a/echo/")
        config.write_text("routes: [unclosed", encoding="utf-8")
        unparsable = await client.post(f"{gw.url}/_gatehouse/reload", headers=ADMIN)
        assert app.gateway.generation is before
    assert rejected.status_code == 422
    assert rejected.headers["content-type"] == "application/problem+json"
    problem = rejected.json()
    assert problem["type"] == "urn:gatehouse:problem:invalid-config"
    fields = {e["field"]: e["message"] for e in problem["errors"]}
    assert any(f.startswith("routes[0] 'a' -> upstream") for f in fields), fields
    assert any(f.startswith("routes[1] 'x' -> upstream") for f in fields), fields  # missing field
    assert any(f.startswith("routes[1] 'x' -> prefix") for f in fields), fields
    assert still.status_code == 200
    assert unparsable.status_code == 422 and "not valid YAML" in unparsable.json()["errors"][0]["message"]


async def test_reload_needs_the_admin_token_and_reports_settings_that_need_a_restart(upstream, tmp_path):
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    write(config, server.url)
    async with gateway_from(config) as (gw, _app), httpx.AsyncClient() as client:
        anonymous = await client.post(f"{gw.url}/_gatehouse/reload")
        data = yaml.safe_load(config.read_text()) | {"trusted_proxies": ["10.0.0.0/8"]}
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
        reloaded = await client.post(f"{gw.url}/_gatehouse/reload", headers=ADMIN)
    assert anonymous.status_code == 401
    assert reloaded.status_code == 200
    assert reloaded.json()["restart_required"] == ["trusted_proxies"]


async def test_reload_without_a_config_file_is_a_409_not_an_invalid_config(upstream):
    # Found by schemathesis: a well-formed request was answered 422 (the client's data is fine;
    # the gateway's state, started without a file, is what prevents it).
    server, _ = upstream
    async with (
        run_gateway(route("a", "/a", server.url), admin_token=TOKEN) as gw,
        httpx.AsyncClient() as client,
    ):
        response = await client.post(f"{gw.url}/_gatehouse/reload", headers=ADMIN)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:gatehouse:problem:not-reloadable"
    assert "not started from a config file" in problem["detail"]
