"""Operations through ``gatehouse serve`` as a real process: the access log on stdout, SIGHUP reload,
and metrics summed over ``--workers 2``."""

from __future__ import annotations

import contextlib
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import orjson
import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_cli import ROOT, START_TIMEOUT, STOP_TIMEOUT, child_env, free_port, gatehouse

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SECRETS = ("Bearer abc.def.ghi", "abc.def.ghi", "session=c00kie-value", "c00kie-value", "s3cr3t-token")


def write_config(path: Path, upstream: str, *names: str, **settings: object) -> None:
    routes = [{"name": name, "prefix": f"/{name}", "upstream": upstream} for name in names]
    path.write_text(yaml.safe_dump({"routes": routes, **settings}), encoding="utf-8")


@contextlib.asynccontextmanager
async def serve(
    tmp_path: Path,
    config: Path,
    *extra: str,
    start_timeout: float = START_TIMEOUT,
    verify: ssl.SSLContext | None = None,
    own_group: bool = False,
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """``gatehouse serve`` until ``/readyz`` answers 200; ``verify``: it serves HTTPS, trusted by that context;
    ``own_group``: in a process group of its own (its pid), for a test to signal the whole group."""
    port = free_port()
    argv = gatehouse("serve", "--config", str(config), "--port", str(port), *extra)
    with (tmp_path / "stdout").open("wb") as out, (tmp_path / "stderr").open("wb") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=out, stderr=err, start_new_session=own_group)
        url = f"{'http' if verify is None else 'https'}://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(timeout=1.0, verify=verify or True) as client:
                with anyio.fail_after(start_timeout):
                    while True:
                        assert proc.poll() is None, (tmp_path / "stderr").read_text(errors="replace")
                        with contextlib.suppress(httpx.TransportError):
                            if (await client.get(f"{url}/_gatehouse/readyz")).status_code == 200:
                                break
                        await anyio.sleep(0.1)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
            with anyio.fail_after(STOP_TIMEOUT):
                while proc.poll() is None:
                    await anyio.sleep(0.05)


async def test_access_log_is_json_on_stdout_without_credentials_and_sighup_reloads(upstream, tmp_path):
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    write_config(config, server.url, "a")
    async with serve(tmp_path, config) as (url, proc), httpx.AsyncClient(timeout=5) as client:
        secret = await client.get(
            f"{url}/a/echo/x?token=s3cr3t-token&page=1",
            headers={"authorization": "Bearer abc.def.ghi", "cookie": "session=c00kie-value"},
        )
        await client.post(f"{url}/a/echo/y", content=b"12345")
        assert (await client.get(f"{url}/b/echo/")).status_code == 404
        write_config(config, server.url, "a", "b")
        proc.send_signal(signal.SIGHUP)
        with anyio.fail_after(10):
            while (await client.get(f"{url}/b/echo/")).status_code != 200:
                await anyio.sleep(0.05)
        assert (await client.get(f"{url}/a/echo/")).status_code == 200
    assert secret.status_code == 200
    stdout = (tmp_path / "stdout").read_text()
    lines = [orjson.loads(line) for line in stdout.splitlines()]  # every line is one JSON object
    assert [(e["method"], e["route"], e["status"]) for e in lines[:3]] == [
        ("GET", "a", 200),
        ("POST", "a", 200),
        ("GET", "(none)", 404),
    ]
    assert lines[0]["path"] == "/a/echo/x?token=[REDACTED]&page=1"
    assert lines[0]["request_id"] == secret.headers["x-request-id"] and lines[1]["bytes_in"] == 5
    assert lines[-1]["route"] == "a" and any(e["route"] == "b" and e["status"] == 200 for e in lines)
    for text in (stdout, (tmp_path / "stderr").read_text()):
        for value in SECRETS:
            assert value not in text
    assert "config reloaded: generation 2, 2 route(s)" in (tmp_path / "stderr").read_text()


@pytest.mark.parametrize("http_server", ["uvicorn", "hypercorn"])
async def test_metrics_are_summed_over_workers(upstream, tmp_path, http_server):
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    ops = f"http://127.0.0.1:{free_port()}"  # every worker binds the ops listener (SO_REUSEPORT)
    write_config(config, server.url, "a", ops_listen=ops.removeprefix("http://"), http_server=http_server)
    async with serve(tmp_path, config, "--workers", "2", start_timeout=60) as (url, _proc):
        # A new connection per request, so both workers take some of them.
        for _ in range(30):
            async with httpx.AsyncClient(timeout=5) as client:
                assert (await client.get(f"{url}/a/echo/")).status_code == 200
        totals = set()
        for _ in range(4):
            async with httpx.AsyncClient(timeout=5) as client:
                text = (await client.get(f"{ops}/_gatehouse/metrics")).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "gatehouse_requests_total" and sample.labels["route"] == "a":
                        totals.add(sample.value)
        async with httpx.AsyncClient(timeout=5) as client:
            accept = {"accept": "application/openmetrics-text;version=1.0.0"}
            strict = (await client.get(f"{ops}/_gatehouse/metrics", headers=accept)).text
            public = await client.get(f"{url}/_gatehouse/metrics")
    assert totals == {30.0}  # whichever worker answers the scrape
    assert public.status_code == 404  # with an ops listener, the public port does not serve metrics
    # Multiprocess mode still gives one build_info and one set of process metrics (the answering
    # worker's), in an exposition that the strict OpenMetrics parser accepts.
    samples = [s for family in openmetrics_families(strict) for s in family.samples]
    assert [s.value for s in samples if s.name == "gatehouse_build_info"] == [1.0]
    assert len([s for s in samples if s.name == "process_resident_memory_bytes"]) == 1
    assert sum(s.value for s in samples if s.name == "gatehouse_requests_total" and s.labels["route"] == "a") == 30
