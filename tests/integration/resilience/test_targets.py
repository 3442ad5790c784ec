"""Balancing, passive ejection, circuit breakers and active checks over real sockets."""

from __future__ import annotations

import anyio
import httpx
import pytest

from tests.faults import refused_port
from tests.gateway import OPS_TOKEN, bearer, route, run_gateway

pytestmark = pytest.mark.anyio


async def test_round_robin_spreads_by_weight_and_sets_each_targets_host(upstream, second_upstream):
    (one, one_stats), (two, two_stats) = upstream, second_upstream
    targets = [{"url": one.url, "weight": 3}, two.url]
    async with run_gateway(route("up", "/up", targets)) as gw, httpx.AsyncClient() as client:
        hosts = []
        for _ in range(8):
            response = await client.get(f"{gw.url}/up/echo")
            hosts.append(dict(response.json()["headers"])["host"])
    assert one_stats.requests["/echo"] == 6 and two_stats.requests["/echo"] == 2
    assert set(hosts) == {f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"}


async def test_least_connections_sends_new_requests_away_from_a_busy_target(upstream, second_upstream):
    (one, one_stats), (two, two_stats) = upstream, second_upstream
    options = {"balancing": "least_connections"}
    async with run_gateway(route("up", "/up", [one.url, two.url], **options)) as gw, httpx.AsyncClient() as client:
        async with client.stream("GET", f"{gw.url}/up/stream", params={"chunks": 2, "delay": 1}) as slow:
            busy = one_stats if one_stats.streams else two_stats
            idle = two_stats if busy is one_stats else one_stats
            for _ in range(3):
                assert (await client.get(f"{gw.url}/up/echo")).status_code == 200
            assert idle.requests["/echo"] == 3 and busy.requests["/echo"] == 0
            await slow.aread()
        assert gw.connections_in_use() == 0


async def test_dead_target_is_ejected_and_traffic_flows_to_the_rest(upstream, caplog):
    server, stats = upstream
    dead = f"http://127.0.0.1:{refused_port()}"
    options = {"passive_health": {"max_failures": 2, "window": 10, "ejection": 30}}
    async with run_gateway(route("up", "/up", [dead, server.url], **options)) as gw, httpx.AsyncClient() as client:
        statuses = [(await client.get(f"{gw.url}/up/echo")).status_code for _ in range(10)]
        state = gw.upstreams()["up"]
    assert statuses[:4] == [502, 200, 502, 200]  # no retries configured: failures show until ejection
    assert statuses[4:] == [200] * 6
    assert state["targets"][0]["state"] == "ejected" and state["targets"][0]["ejected_for"] > 25
    assert "ejected http://127.0.0.1" in caplog.text


async def test_last_target_is_kept_and_readyz_reports_the_route_degraded(upstream, second_upstream, caplog):
    (one, _), (two, _) = upstream, second_upstream
    options = {"passive_health": {"max_failures": 2}}
    async with run_gateway(route("up", "/up", [one.url, two.url], **options)) as gw, httpx.AsyncClient() as client:
        for _ in range(6):  # both fail: the first to reach max_failures goes, the last one stays
            assert (await client.get(f"{gw.url}/up/status/503")).status_code == 503
        states = [t["state"] for t in gw.upstreams()["up"]["targets"]]
        assert sorted(states) == ["ejected", "healthy"]
        ready = await client.get(f"{gw.url}/_gatehouse/readyz")
        assert ready.status_code == 200  # one sick upstream must not take the whole gateway out
        assert ready.json()["degraded"] == {"up": "the last healthy target is failing"}
        assert "is the last healthy target: not ejected" in caplog.text
        assert (await client.get(f"{gw.url}/up/echo")).status_code == 200
        assert (await client.get(f"{gw.url}/_gatehouse/readyz")).json()["status"] == "ready"


async def test_open_breaker_answers_503_with_retry_after_at_once_then_half_opens(upstream):
    server, stats = upstream
    options = {"circuit_breaker": {"failure_threshold": 2, "reset_timeout": 0.5}}
    async with run_gateway(route("up", "/up", server.url, **options)) as gw, httpx.AsyncClient() as client:
        for _ in range(2):
            assert (await client.get(f"{gw.url}/up/flaky", params={"key": "k", "failures": 2})).status_code == 503
        refused = await client.get(f"{gw.url}/up/flaky", params={"key": "k", "failures": 2})
        assert refused.status_code == 503
        assert refused.json()["type"] == "urn:gatehouse:problem:circuit-open"
        assert refused.headers["retry-after"] == "1"
        assert stats.flaky["k"] == 2  # the upstream never saw it
        assert gw.upstreams()["up"]["targets"][0]["breaker"] == "open"
        await anyio.sleep(0.6)
        trial = await client.get(f"{gw.url}/up/flaky", params={"key": "k", "failures": 2})
        assert trial.status_code == 200
        assert gw.upstreams()["up"]["targets"][0]["breaker"] == "closed"


async def test_open_breaker_sends_requests_to_the_other_target(upstream, second_upstream):
    (one, one_stats), (two, two_stats) = upstream, second_upstream
    options = {"circuit_breaker": {"failure_threshold": 1, "reset_timeout": 30}, "passive_health": {"max_failures": 0}}
    async with run_gateway(route("up", "/up", [one.url, two.url], **options)) as gw, httpx.AsyncClient() as client:
        one_stats.health = 503
        first = await client.get(f"{gw.url}/up/health")  # to [0], which fails and opens its breaker
        assert first.status_code == 503
        for _ in range(4):
            assert (await client.get(f"{gw.url}/up/health")).status_code == 200
    assert one_stats.requests["/health"] == 1 and two_stats.requests["/health"] == 4


async def test_health_checks_keep_traffic_off_a_failing_target_until_it_recovers(upstream, second_upstream):
    (one, one_stats), (two, two_stats) = upstream, second_upstream
    one_stats.health = 500
    check = {"path": "/health", "interval": 0.05, "timeout": 1, "healthy_threshold": 2, "unhealthy_threshold": 2}
    async with run_gateway(route("up", "/up", [one.url, two.url], health_check=check)) as gw:
        async with httpx.AsyncClient() as client:
            await two_stats.wait_for(lambda: gw.upstreams()["up"]["targets"][1]["state"] == "healthy")
            assert gw.upstreams()["up"]["targets"][0]["active_health"] == "unhealthy"
            for _ in range(4):
                assert (await client.get(f"{gw.url}/up/echo")).status_code == 200
            assert one_stats.requests["/echo"] == 0
            one_stats.health = 200
            await one_stats.wait_for(lambda: gw.upstreams()["up"]["targets"][0]["state"] == "healthy")
            for _ in range(4):
                await client.get(f"{gw.url}/up/echo")
            assert one_stats.requests["/echo"] == 2
            # Checks share the targets' pools, so one may be in flight now; none may leak.
            await one_stats.wait_for(lambda: gw.connections_in_use() == 0)


async def test_no_healthy_target_means_503_at_once():
    dead = f"http://127.0.0.1:{refused_port()}"
    check = {"path": "/health", "interval": 0.05, "timeout": 0.5}
    async with run_gateway(route("up", "/up", dead, health_check=check)) as gw, httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/up/echo")
        assert response.status_code == 503
        assert response.json()["type"] == "urn:gatehouse:problem:no-healthy-target"
        ready = (await client.get(f"{gw.url}/_gatehouse/readyz")).json()
        assert ready["degraded"] == {"up": "no healthy target"}


async def test_upstreams_endpoint_shows_every_target(upstream):
    server, _ = upstream
    dead = f"http://127.0.0.1:{refused_port()}"
    routes = (
        route("plain", "/plain", server.url),
        route("pool", "/pool", [server.url, dead], circuit_breaker={}, max_concurrent=4),
    )
    async with run_gateway(*routes, admin_token=OPS_TOKEN) as gw, httpx.AsyncClient() as client:
        body = (await client.get(f"{gw.url}/_gatehouse/upstreams", headers=bearer())).json()["routes"]
    assert body["plain"]["targets"][0]["url"] == server.url and body["plain"]["balancing"] is None
    pool = body["pool"]
    assert pool["balancing"] == "round_robin" and pool["max_concurrent"] == 4 and pool["concurrent"] == 0
    assert [t["url"] for t in pool["targets"]] == [server.url, dead]
    assert {t["breaker"] for t in pool["targets"]} == {"closed"}
    assert {t["in_flight"] for t in pool["targets"]} == {0}
