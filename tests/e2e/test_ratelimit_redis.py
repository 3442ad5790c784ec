"""Two Gatehouse processes against one real Redis share one rate-limit budget."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import (
    HEALTHZ,
    free_port,
    gatehouse,
    process,
    stop,
    upstream_port,  # noqa: F401 (fixture)
    wait_until_ok,
    write_config,
)

pytestmark = pytest.mark.slow

LIMIT = 5


def test_two_processes_share_one_redis_budget(tmp_path: Path, upstream_port: int) -> None:  # noqa: F811
    route_name = f"shared-{uuid.uuid4().hex[:12]}"  # a fresh budget in a Redis that outlives test runs
    config = write_config(
        tmp_path,
        f"""\
        redis_url: redis://127.0.0.1:6379/0
        routes:
          - name: {route_name}
            prefix: /demo
            upstream: http://127.0.0.1:{upstream_port}
            rate_limit:
              limit: {LIMIT}/minute
              key: header:X-Tenant
        """,
    )
    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    argvs = [gatehouse("serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(p)) for p in ports]
    with process(argvs[0], logs[0], cwd=tmp_path) as first, process(argvs[1], logs[1], cwd=tmp_path) as second:
        for proc, port, log in ((first, ports[0], logs[0]), (second, ports[1], logs[1])):
            wait_until_ok(f"http://127.0.0.1:{port}{HEALTHZ}", proc, log)
        responses = []
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            for i in range(8):  # alternate between the two processes
                port = ports[i % 2]
                responses.append(client.get(f"http://127.0.0.1:{port}/demo/hello", headers={"x-tenant": "acme"}))
            other = client.get(f"http://127.0.0.1:{ports[1]}/demo/hello", headers={"x-tenant": "globex"})
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == LIMIT, statuses
        assert statuses.count(429) == 8 - LIMIT, statuses
        assert statuses[:LIMIT] == [200] * LIMIT  # in order: the budget ran out, then stayed out
        refused = responses[-1]
        assert refused.headers["ratelimit-limit"] == str(LIMIT)
        assert refused.headers["ratelimit-remaining"] == "0"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert other.status_code == 200  # another key, its own budget
        for proc, log in ((first, logs[0]), (second, logs[1])):
            assert stop(proc, log) == 0, log.read_text(errors="replace")
