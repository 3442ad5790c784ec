"""Retries over real sockets: what is retried, how often (counted by the upstream), and what never is."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.faults import fault_server, refused_port
from tests.gateway import route, run_gateway

pytestmark = pytest.mark.anyio

FAST = {"attempts": 3, "backoff": {"base": 0.01, "cap": 0.02}}


async def test_get_503_then_recover_is_retried_until_it_succeeds(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url, retries=FAST)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/flaky", params={"key": "a", "failures": 2})
        assert response.status_code == 200
        assert response.json()["attempt"] == 3
        assert stats.flaky["a"] == 3
        assert gw.connections_in_use() == 0


async def test_retries_stop_at_attempts_and_the_last_answer_is_relayed(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url, retries=FAST)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/flaky", params={"key": "b", "failures": 10})
        assert response.status_code == 503
        assert stats.flaky["b"] == 3
        assert gw.connections_in_use() == 0


async def test_post_without_idempotency_key_is_never_retried(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url, retries=FAST)) as gw, httpx.AsyncClient() as client:
        response = await client.post(f"{gw.url}/up/flaky", params={"key": "c", "failures": 1}, content=b"order")
        assert response.status_code == 503
        assert stats.flaky["c"] == 1
        assert gw.connections_in_use() == 0


async def test_post_with_idempotency_key_and_small_body_is_retried_with_the_same_body(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url, retries=FAST)) as gw, httpx.AsyncClient() as client:
        response = await client.post(
            f"{gw.url}/up/flaky",
            params={"key": "d", "failures": 1},
            content=b"x" * 1000,
            headers={"idempotency-key": "order-42"},
        )
        assert response.status_code == 200
        assert stats.flaky["d"] == 2
        echoed = await client.put(f"{gw.url}/up/echo", content=b"y" * 5000)
        assert echoed.json()["body_length"] == 5000


async def test_body_over_the_buffer_bound_gets_a_single_attempt(upstream):
    server, stats = upstream
    retries = {**FAST, "max_body_bytes": 100}
    async with run_gateway(route("up", "/up", server.url, retries=retries)) as gw, httpx.AsyncClient() as client:
        response = await client.put(f"{gw.url}/up/flaky", params={"key": "e", "failures": 1}, content=b"z" * 101)
        assert response.status_code == 503
        assert stats.flaky["e"] == 1


async def test_retry_after_within_bounds_is_waited_for(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url, retries=FAST)) as gw, httpx.AsyncClient() as client:
        started = time.monotonic()
        response = await client.get(f"{gw.url}/up/flaky", params={"key": "f", "failures": 1, "retry_after": 1})
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert stats.flaky["f"] == 2
        assert elapsed >= 0.95


async def test_retry_after_beyond_the_bound_is_passed_to_the_client_without_retrying(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url, retries=FAST)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/flaky", params={"key": "g", "failures": 1, "retry_after": 120})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "120"
        assert stats.flaky["g"] == 1


async def test_4xx_is_never_retried(upstream):
    server, stats = upstream
    async with run_gateway(route("up", "/up", server.url, retries=FAST)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/status/429")
        assert response.status_code == 429
        assert stats.requests["/status/429"] == 1


async def test_refused_target_fails_over_to_the_other_target(upstream):
    server, stats = upstream
    targets = [f"http://127.0.0.1:{refused_port()}", server.url]
    async with run_gateway(route("up", "/up", targets, retries=FAST)) as gw, httpx.AsyncClient() as client:
        for _ in range(4):
            response = await client.get(f"{gw.url}/up/echo")
            assert response.status_code == 200
        assert stats.requests["/echo"] == 4
        assert gw.connections_in_use() == 0


async def test_post_to_a_refused_target_is_not_moved_to_another(upstream):
    server, stats = upstream
    targets = [f"http://127.0.0.1:{refused_port()}", server.url]
    async with run_gateway(route("up", "/up", targets, retries=FAST)) as gw, httpx.AsyncClient() as client:
        response = await client.post(f"{gw.url}/up/echo", content=b"once")  # round robin starts at [0]
        assert response.status_code == 502
        assert stats.requests["/echo"] == 0


async def test_hanging_target_times_out_then_the_retry_goes_to_the_other(upstream):
    server, stats = upstream
    async with fault_server("hang") as hang:
        options = {"retries": FAST, "timeout": {"read": 0.5}}
        routes = (route("two", "/two", [hang.url, server.url], **options), route("hang", "/hang", hang.url, **options))
        async with run_gateway(*routes) as gw, httpx.AsyncClient() as client:
            response = await client.get(f"{gw.url}/two/echo")  # round robin starts with the hanging one
            assert response.status_code == 200
            assert hang.requests == 1
            assert stats.requests["/echo"] == 1
            post = await client.post(f"{gw.url}/hang/echo", content=b"x")
            assert post.status_code == 504
            assert hang.requests == 2
            get = await client.get(f"{gw.url}/hang/echo")
            assert get.status_code == 504
            assert hang.requests == 5
            assert gw.connections_in_use() == 0


async def test_reset_before_the_response_is_retried_for_get():
    async with fault_server("reset") as reset:
        async with run_gateway(route("up", "/up", reset.url, retries=FAST)) as gw, httpx.AsyncClient() as client:
            response = await client.get(f"{gw.url}/up/anything")
            assert response.status_code == 502
            assert response.headers["content-type"] == "application/problem+json"
            assert reset.requests == 3
            assert gw.connections_in_use() == 0


async def test_reset_mid_response_is_cut_short_and_never_retried(upstream):
    server, stats = upstream
    async with fault_server("reset_mid_body") as reset:
        async with run_gateway(route("up", "/up", [reset.url, server.url], retries=FAST)) as gw:
            async with httpx.AsyncClient() as client:
                with pytest.raises(httpx.RemoteProtocolError):
                    async with client.stream("GET", f"{gw.url}/up/large") as response:
                        assert response.status_code == 200
                        async for _ in response.aiter_raw():
                            pass
            assert reset.requests == 1
            assert stats.requests["/large"] == 0
            await stats.wait_for(lambda: gw.connections_in_use() == 0)
            target = gw.upstreams()["up"]["targets"][0]
            assert target["recent_failures"] == 1 and target["in_flight"] == 0


async def test_retry_budget_limits_retries_when_everything_fails(upstream):
    server, stats = upstream
    retries = {**FAST, "attempts": 3, "budget": 0.2, "min_per_second": 0}
    async with run_gateway(route("up", "/up", server.url, retries=retries)) as gw, httpx.AsyncClient() as client:
        for _ in range(20):
            response = await client.get(f"{gw.url}/up/flaky", params={"key": "h", "failures": 1000})
            assert response.status_code == 503
        # 20 requests may add at most 20% retries (a retry is counted once the budget allows it).
        assert 20 <= stats.flaky["h"] <= 24
        assert gw.upstreams()["up"]["retry_budget"]["retries"] <= 4
