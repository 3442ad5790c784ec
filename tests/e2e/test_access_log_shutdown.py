"""The buffered access log loses no line when ``gatehouse serve`` stops on SIGTERM."""

from __future__ import annotations

import anyio
import httpx
import orjson
import pytest
import yaml

from tests.e2e.test_ops_cli import serve

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REQUESTS = 200


async def test_every_request_answered_before_sigterm_has_its_line(upstream, tmp_path):
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    # Nothing is flushed on the interval during the test: every line must come from the shutdown flush.
    routes = [{"name": "a", "prefix": "/a", "upstream": server.url}]
    config.write_text(yaml.safe_dump({"routes": routes, "access_log_flush_interval": 60}), encoding="utf-8")
    answered: list[str] = []
    async with serve(tmp_path, config) as (url, proc):
        async with httpx.AsyncClient(timeout=10) as client:

            async def fetch(count: int) -> None:
                for _ in range(count):
                    response = await client.get(f"{url}/a/echo/")
                    assert response.status_code == 200
                    answered.append(response.headers["x-request-id"])

            async with anyio.create_task_group() as tasks:
                for _ in range(8):
                    tasks.start_soon(fetch, REQUESTS // 8)
        # Most lines are still in the buffer (32 KiB is about 100 of them).
        proc.terminate()
    assert proc.returncode == 0
    lines = [orjson.loads(line) for line in (tmp_path / "stdout").read_bytes().splitlines()]
    assert len(answered) == REQUESTS
    assert sorted(line["request_id"] for line in lines) == sorted(answered)
