"""Failures answer with a precise status and an RFC 9457 problem body, never a trace."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest

from app.config.settings import Settings
from app.serving.uvicorn_server import server_config
from tests.gateway import route, run_gateway
from tests.servers import run_uvicorn

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once the socket closes


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"] == f"urn:gatehouse:problem:{slug}"
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return problem


async def test_connect_failure_is_502():
    async with run_gateway(route("dead", "/dead", f"http://127.0.0.1:{closed_port()}")) as gw:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{gw.url}/dead/x", headers={"x-request-id": "trace-me-1"})
        assert gw.connections_in_use() == 0
    problem = assert_problem(response, 502, "upstream-error")
    assert problem["request_id"] == "trace-me-1"
    assert "could not connect" in problem["detail"]


async def test_read_timeout_is_504(upstream):
    server, _ = upstream
    slow = route("slow", "/slow", server.url, timeout={"read": 0.3})
    async with run_gateway(slow) as gw, httpx.AsyncClient() as client:
        with anyio.fail_after(5):
            response = await client.get(f"{gw.url}/slow/sleep?seconds=3")
        assert gw.connections_in_use() == 0
    problem = assert_problem(response, 504, "upstream-timeout")
    assert "reading from" in problem["detail"]


async def test_connect_timeout_is_504():
    # A listener whose backlog is full never completes the handshake: a connect timeout.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                try:
                    filler.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                fillers.append(filler)
            hang = route("hang", "/hang", f"http://127.0.0.1:{port}", timeout={"connect": 0.3})
            async with run_gateway(hang) as gw, httpx.AsyncClient() as client:
                with anyio.fail_after(5):
                    response = await client.get(f"{gw.url}/hang/x")
        finally:
            for filler in fillers:
                filler.close()
    problem = assert_problem(response, 504, "upstream-timeout")
    assert "connecting to" in problem["detail"]


async def test_pool_exhausted_is_503_and_the_pool_recovers(upstream):
    server, _ = upstream
    tight = route("tight", "/tight", server.url, timeout={"pool": 0.2})
    async with run_gateway(tight, limits={"max_connections": 1}) as gw, httpx.AsyncClient() as client:
        async with client.stream("GET", f"{gw.url}/tight/stream?chunks=40&delay=0.05") as holding:
            chunks = holding.aiter_raw()  # held: a dropped generator would close the stream
            await anext(chunks)
            with anyio.fail_after(5):
                response = await client.get(f"{gw.url}/tight/echo")
            problem = assert_problem(response, 503, "upstream-unavailable")
            assert response.headers["retry-after"] == "1"
            assert "no upstream connection became free" in problem["detail"]
            rest = [chunk async for chunk in chunks]
            assert rest
        assert (await client.get(f"{gw.url}/tight/echo")).status_code == 200
        assert gw.connections_in_use() == 0


async def test_unknown_path_is_404(upstream):
    server, stats = upstream
    async with run_gateway(route("api", "/api", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/elsewhere")
    assert_problem(response, 404, "route-not-found")
    assert sum(stats.requests.values()) == 0


async def test_method_not_allowed_is_405_with_allow(upstream):
    server, stats = upstream
    ro = route("ro", "/ro", server.url, methods=["GET"])
    async with run_gateway(ro) as gw, httpx.AsyncClient() as client:
        response = await client.post(f"{gw.url}/ro/echo", content=b"x")
        head = await client.head(f"{gw.url}/ro/echo")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET"
    assert head.status_code == 200  # HEAD rides on GET
    assert stats.requests["/echo"] == 1


async def test_declared_body_over_limit_is_413_before_anything_is_sent(upstream):
    server, stats = upstream
    small = route("small", "/small", server.url, max_body_bytes=1000)
    async with run_gateway(small) as gw, httpx.AsyncClient() as client:
        response = await client.post(f"{gw.url}/small/upload", content=b"x" * 5000)
        ok = await client.post(f"{gw.url}/small/upload", content=b"x" * 1000)
    assert_problem(response, 413, "payload-too-large")
    assert ok.status_code == 200 and ok.json()["length"] == 1000
    assert stats.requests["/upload"] == 1


async def test_streamed_body_over_limit_is_cut_off_with_413(upstream):
    server, _ = upstream
    small = route("small", "/small", server.url, max_body_bytes=100_000)

    async def body():
        for _ in range(50):
            yield b"z" * 10_000

    async with run_gateway(small) as gw, httpx.AsyncClient() as client:
        with anyio.fail_after(10):
            response = await client.post(f"{gw.url}/small/upload", content=body())
        assert gw.connections_in_use() == 0
    assert_problem(response, 413, "payload-too-large")


@pytest.mark.parametrize("status", [400, 401, 404, 418, 500, 502, 503])
async def test_upstream_statuses_pass_through_untouched(upstream, status):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/status/{status}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": status}


async def test_upstream_killed_mid_response_cuts_the_client_response_short():
    async def dying_upstream(scope, _receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100000")]})
        await send({"type": "http.response.body", "body": b"a" * 1000, "more_body": True})
        raise RuntimeError("upstream dies mid-body")  # uvicorn drops the connection

    async with run_uvicorn(dying_upstream, log_level="critical") as up, run_gateway(route("d", "/d", up.url)) as gw:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"{gw.url}/d/x")
            # The gateway survives and answers the next request.
            health = await client.get(f"{gw.url}/_gatehouse/healthz")
        assert health.status_code == 200
        assert gw.connections_in_use() == 0


async def test_a_bug_in_a_filter_is_a_logged_500_problem_not_a_crash(upstream, caplog, monkeypatch):
    from app.assembly import generation
    from app.main import create_app

    server, _ = upstream

    async def broken(exchange, call_next):  # noqa: ARG001
        raise RuntimeError("bug in a filter")

    monkeypatch.setattr(generation, "route_filters", lambda _edge, _pools, **_options: [lambda _route: broken])
    app = create_app(Settings(routes=[route("up", "/up", server.url)]))
    async with run_uvicorn(config=server_config(app, host="127.0.0.1", port=0, log_level="warning")) as gw:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{gw.url}/up/echo")
            health = await client.get(f"{gw.url}/_gatehouse/healthz")
    problem = assert_problem(response, 500, "internal")
    assert "bug in a filter" not in response.text  # the trace stays in the log
    assert "RuntimeError: bug in a filter" in caplog.text
    assert problem["detail"].startswith("The gateway failed unexpectedly")
    assert health.status_code == 200
