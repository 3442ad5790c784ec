"""Prometheus metrics at /_gatehouse/metrics: exact counts after known traffic, over real sockets."""

from __future__ import annotations

import platform

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

import app
from tests.faults import fault_server, refused_port
from tests.gateway import OPS_TOKEN, bearer, route, run_gateway

pytestmark = pytest.mark.anyio

FAST = {"attempts": 2, "backoff": {"base": 0.001, "cap": 0.002}}
STATES = ("closed", "half_open", "open")


async def scrape(
    client: httpx.AsyncClient, url: str, *, token: str = OPS_TOKEN
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get(f"{url}/_gatehouse/metrics", headers=bearer(token))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_requests_are_counted_by_route_method_and_status_class_with_latency_histograms(upstream):
    server, _ = upstream
    routes = (route("a", "/a", server.url), route("b", "/b", server.url))
    async with run_gateway(*routes, metrics_token=OPS_TOKEN) as gw, httpx.AsyncClient() as client:
        for _ in range(3):
            assert (await client.get(f"{gw.url}/a/echo/x?id=1")).status_code == 200
        for n in range(2):
            assert (await client.post(f"{gw.url}/a/echo/{n}", content=b"body")).status_code == 200
        assert (await client.get(f"{gw.url}/a/status/503")).status_code == 503
        assert (await client.get(f"{gw.url}/b/status/404")).status_code == 404
        assert (await client.request("PROPFIND", f"{gw.url}/b/echo/")).status_code == 200
        assert (await client.get(f"{gw.url}/nowhere/secret-path")).status_code == 404
        text = (await client.get(f"{gw.url}/_gatehouse/metrics", headers=bearer())).text
        samples = await scrape(client, gw.url)

    total = "gatehouse_requests_total"
    assert value(samples, total, route="a", method="GET", status_class="2xx") == 3
    assert value(samples, total, route="a", method="POST", status_class="2xx") == 2
    assert value(samples, total, route="a", method="GET", status_class="5xx") == 1
    assert value(samples, total, route="b", method="GET", status_class="4xx") == 1
    assert value(samples, total, route="b", method="OTHER", status_class="2xx") == 1
    assert value(samples, total, route="(none)", method="GET", status_class="4xx") == 1
    assert sum(v for (name, _), v in samples.items() if name == total) == 9
    assert value(samples, "gatehouse_request_duration_seconds_count", route="a") == 6
    assert value(samples, "gatehouse_request_duration_seconds_count", route="b") == 2
    assert value(samples, "gatehouse_upstream_duration_seconds_count", route="a") == 6
    assert value(samples, "gatehouse_upstream_duration_seconds_count", route="(none)") == 0
    assert value(samples, "gatehouse_requests_in_flight") == 0
    # Low cardinality: route names label the series, never the paths requested.
    assert "/echo" not in text and "secret-path" not in text and "PROPFIND" not in text


async def test_upstream_errors_are_counted_by_kind(upstream):
    server, _ = upstream
    routes = (
        route("down", "/down", f"http://127.0.0.1:{refused_port()}"),
        route("slow", "/slow", server.url, timeout={"read": 0.2}),
    )
    async with run_gateway(*routes, metrics_token=OPS_TOKEN) as gw, httpx.AsyncClient() as client:
        for _ in range(2):
            assert (await client.get(f"{gw.url}/down/x")).status_code == 502
        assert (await client.get(f"{gw.url}/slow/sleep?seconds=2")).status_code == 504
        async with fault_server("reset") as reset:
            async with run_gateway(route("reset", "/r", reset.url), metrics_token=OPS_TOKEN) as gw2:
                assert (await client.get(f"{gw2.url}/r/x")).status_code == 502
                reset_samples = await scrape(client, gw2.url)
        samples = await scrape(client, gw.url)

    errors = "gatehouse_upstream_errors_total"
    assert value(samples, errors, route="down", kind="connect") == 2
    assert value(samples, errors, route="slow", kind="timeout") == 1
    assert value(samples, errors, route="slow", kind="connect") == 0
    assert value(reset_samples, errors, route="reset", kind="reset") == 1
    assert value(samples, "gatehouse_requests_total", route="down", method="GET", status_class="5xx") == 2


async def test_retries_ejections_and_breaker_state_are_exported(upstream):
    server, _ = upstream
    dead = f"http://127.0.0.1:{refused_port()}"
    spec = route(
        "pool",
        "/p",
        [dead, server.url],
        retries=FAST,
        balancing="round_robin",
        passive_health={"max_failures": 1},
        circuit_breaker={"failure_threshold": 1, "reset_timeout": 60},
    )
    async with run_gateway(spec, metrics_token=OPS_TOKEN) as gw, httpx.AsyncClient() as client:
        statuses = [(await client.get(f"{gw.url}/p/echo/")).status_code for _ in range(4)]
        samples = await scrape(client, gw.url)

    assert statuses == [200, 200, 200, 200]
    # Round robin tries the dead target once; that attempt fails and is retried on the live one.
    assert value(samples, "gatehouse_retries_total", route="pool") == 1
    assert value(samples, "gatehouse_upstream_errors_total", route="pool", kind="connect") == 1
    assert value(samples, "gatehouse_target_ejections_total", route="pool", target=dead) == 1
    assert value(samples, "gatehouse_target_ejections_total", route="pool", target=server.url) == 0
    assert value(samples, "gatehouse_target_ejected", route="pool", target=dead) == 1
    breaker = "gatehouse_breaker_state"
    # One series per state, 1 for the current one.
    assert {s: value(samples, breaker, route="pool", target=dead, state=s) for s in STATES} == {
        "closed": 0,
        "half_open": 0,
        "open": 1,
    }
    assert {s: value(samples, breaker, route="pool", target=server.url, state=s) for s in STATES} == {
        "closed": 1,
        "half_open": 0,
        "open": 0,
    }
    assert sum(1 for name, _ in samples if name == breaker) == 6
    assert value(samples, "gatehouse_upstream_duration_seconds_count", route="pool") == 4


async def test_rate_limit_rejections_are_counted(upstream):
    server, _ = upstream
    async with (
        run_gateway(route("r", "/r", server.url, rate_limit={"limit": "2/minute"}), metrics_token=OPS_TOKEN) as gw,
        httpx.AsyncClient() as client,
    ):
        statuses = [(await client.get(f"{gw.url}/r/echo/")).status_code for _ in range(5)]
        samples = await scrape(client, gw.url)
    assert statuses == [200, 200, 429, 429, 429]
    assert value(samples, "gatehouse_rate_limited_total", route="r") == 3
    assert value(samples, "gatehouse_requests_total", route="r", method="GET", status_class="4xx") == 3


async def test_each_app_counts_only_its_own_traffic(upstream):
    server, _ = upstream
    async with httpx.AsyncClient() as client:
        async with run_gateway(route("a", "/a", server.url), metrics_token=OPS_TOKEN) as first:
            await client.get(f"{first.url}/a/echo/")
        async with run_gateway(route("a", "/a", server.url), metrics_token=OPS_TOKEN) as second:
            samples = await scrape(client, second.url)
    assert value(samples, "gatehouse_requests_total", route="a", method="GET", status_class="2xx") == 0


async def test_build_info_process_metrics_and_long_stream_buckets_are_exported(upstream):
    server, _ = upstream
    async with run_gateway(route("a", "/a", server.url), metrics_token=OPS_TOKEN) as gw, httpx.AsyncClient() as client:
        assert (await client.get(f"{gw.url}/a/echo/")).status_code == 200
        samples = await scrape(client, gw.url)
    info = [labels for name, labels in samples if name == "gatehouse_build_info"]
    assert len(info) == 1 and samples["gatehouse_build_info", info[0]] == 1
    assert dict(info[0])["version"] == app.__version__
    assert dict(info[0])["python_version"] == platform.python_version()
    # The process metrics are this process's (the gateway runs in the test's process).
    assert value(samples, "process_resident_memory_bytes") > 1_000_000
    assert value(samples, "process_open_fds") > 0
    assert value(samples, "process_start_time_seconds") > 1_600_000_000
    # A stream that lasts minutes still lands in a bucket below +Inf.
    buckets = {dict(labels)["le"] for name, labels in samples if name == "gatehouse_request_duration_seconds_bucket"}
    assert {"600.0", "1800.0", "3600.0", "+Inf"} <= buckets
    upstream_buckets = {
        dict(labels)["le"] for name, labels in samples if name == "gatehouse_upstream_duration_seconds_bucket"
    }
    assert {"30.0", "60.0", "120.0"} <= upstream_buckets and "3600.0" not in upstream_buckets


async def test_a_scrape_that_asks_for_openmetrics_gets_it_and_it_parses_strictly(upstream):
    server, _ = upstream
    spec = route("a", "/a", server.url, circuit_breaker={"failure_threshold": 1, "reset_timeout": 60})
    async with run_gateway(spec, metrics_token=OPS_TOKEN) as gw, httpx.AsyncClient() as client:
        assert (await client.get(f"{gw.url}/a/echo/")).status_code == 200
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        response = await client.get(f"{gw.url}/_gatehouse/metrics", headers={"accept": accept} | bearer())
        plain = await client.get(f"{gw.url}/_gatehouse/metrics", headers=bearer())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n")
    # The OpenMetrics parser is strict (types, suffixes, label syntax, the EOF marker): it raises on any slip.
    families = {family.name: family for family in openmetrics_families(response.text)}
    assert families["gatehouse_requests"].type == "counter"
    assert families["gatehouse_build_info"].type == "gauge"
    assert families["gatehouse_request_duration_seconds"].type == "histogram"
    assert {s.labels["state"] for s in families["gatehouse_breaker_state"].samples} == set(STATES)
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
