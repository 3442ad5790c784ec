"""``gatehouse serve --workers N`` as a real process: a reload reaches every worker, and a shutdown drains first."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import httpx
import pytest
import yaml

from tests.e2e.test_ops_cli import serve

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ADMIN = "an-admin-token-for-tests"


def write_config(path: Path, upstream: str, *names: str) -> None:
    routes = [{"name": name, "prefix": f"/{name}", "upstream": upstream} for name in names]
    settings = {"routes": routes, "admin_token": ADMIN, "drain_delay": 1.5, "shutdown_grace": 2}
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")


def workers_of(pid: int) -> set[int]:
    """The worker processes of uvicorn's supervisor ``pid`` (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = set()
    for child in children:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(int(child))
        except OSError:
            continue
    return found


async def fresh_get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:  # a new connection: any worker may accept it
        return await client.get(url)


async def test_post_reload_reaches_every_worker_and_sigterm_drains_first(upstream, tmp_path):
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    write_config(config, server.url, "a")
    async with serve(tmp_path, config, "--workers", "2", start_timeout=60) as (url, proc):
        with anyio.fail_after(60):
            while len(before := workers_of(proc.pid)) != 2:
                await anyio.sleep(0.1)
        write_config(config, server.url, "a", "b")
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(f"{url}/_gatehouse/reload", headers={"authorization": f"Bearer {ADMIN}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["routes"] == ["a", "b"] and "workers" in answer.json()
        with anyio.fail_after(120):  # every worker is replaced, one at a time, by one that read the new file
            while len(after := workers_of(proc.pid)) != 2 or after & before:
                await anyio.sleep(0.2)
        statuses = [(await fresh_get(f"{url}/b/echo/")).status_code for _ in range(20)]
        assert statuses == [200] * 20

        # SIGTERM: every worker answers /readyz 503 for drain_delay while it still takes new connections.
        proc.send_signal(signal.SIGTERM)
        seen = []
        with anyio.fail_after(20):
            while proc.poll() is None:
                try:
                    seen.append((await fresh_get(f"{url}/_gatehouse/readyz")).status_code)
                except httpx.TransportError:
                    seen.append("refused")
                await anyio.sleep(0.05)
        assert proc.returncode == 0
    draining = seen[: seen.index("refused")] if "refused" in seen else seen
    assert draining.count(503) >= 5, seen  # 1.5 s of answered 503s before the listener closed
