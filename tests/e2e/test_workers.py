"""``gatehouse serve --workers N`` as a real process, under either server: connections are spread over the
workers, a killed worker is replaced, a reload reaches every worker, and a shutdown drains first."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import anyio
import httpx
import pytest
import yaml

from tests.certs import TestCA
from tests.e2e.test_cli import ROOT, START_TIMEOUT, child_env, free_port, gatehouse
from tests.e2e.test_ops_cli import serve

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ADMIN = "an-admin-token-for-tests"
SERVERS = ["uvicorn", "hypercorn"]


def write_config(path: Path, upstream: str, *names: str, **extra: object) -> None:
    routes = [{"name": name, "prefix": f"/{name}", "upstream": upstream} for name in names]
    settings = {"routes": routes, "admin_token": ADMIN, "drain_delay": 1.5, "shutdown_grace": 2, **extra}
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


async def two_workers(supervisor: int, *, without: int | None = None) -> set[int]:
    """The supervisor's two workers, once it has two (and ``without`` is not one of them)."""
    with anyio.fail_after(120):  # a replacement imports the app anew: seconds on a loaded machine
        while len(workers := workers_of(supervisor)) != 2 or without in workers:
            await anyio.sleep(0.1)
    return workers


async def workers_started(log: Path, count: int) -> None:
    """Until ``count`` workers have logged their start-up (the supervisor knows when, but does not say)."""
    with anyio.fail_after(120):  # a worker imports the app anew: seconds on a loaded machine
        while log.read_text(errors="replace").count("gatehouse ready:") < count:
            await anyio.sleep(0.1)


def serving_worker(response: httpx.Response, supervisor: int) -> int:
    """The worker holding the server end of the (still open) connection that carried ``response``.

    The connection is found in ``/proc/net/tcp`` by its two ports, then the process that holds
    its socket in ``/proc/<pid>/fd``.
    """
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    server_port = response.url.port
    inode = None
    for line in Path(f"/proc/{supervisor}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{server_port:04X}") and fields[2].endswith(f":{client_port:04X}"):
            inode = fields[9]
    assert inode is not None, f"no server socket for the connection from port {client_port}"
    for worker in workers_of(supervisor):
        with contextlib.suppress(OSError):  # a worker that has just gone away
            for fd in Path(f"/proc/{worker}/fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return worker
    raise AssertionError(f"no worker of {supervisor} holds socket {inode}")


async def fresh_get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:  # a new connection: any worker may accept it
        return await client.get(url)


@pytest.mark.parametrize("http_server", SERVERS)
async def test_post_reload_reaches_every_worker_and_sigterm_drains_first(upstream, tmp_path, http_server):
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    write_config(config, server.url, "a", http_server=http_server)
    async with serve(tmp_path, config, "--workers", "2", start_timeout=60) as (url, proc):
        before = await two_workers(proc.pid)
        write_config(config, server.url, "a", "b", http_server=http_server)
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


@pytest.mark.parametrize(
    ("http_server", "protocol"), [("uvicorn", "HTTP/1.1"), ("hypercorn", "h2c"), ("hypercorn", "h2")]
)
async def test_connections_are_spread_over_the_workers_and_a_killed_worker_is_replaced(
    upstream, tmp_path, http_server, protocol
):
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    tls = None
    if protocol == "h2":  # HTTPS, h2 by ALPN
        ca = TestCA(tmp_path)
        leaf = ca.issue()
        tls = {"cert_file": str(leaf.cert), "key_file": str(leaf.key)}
    write_config(config, server.url, "a", http_server=http_server, tls=tls)
    verify = ca.client_context() if tls else None
    http2 = protocol != "HTTP/1.1"  # over cleartext, httpx's http2 without http1 is h2c with prior knowledge

    async def served_by(want: set[int]) -> list[tuple[int, str]]:
        """New connections, one request each, until each worker of ``want`` has served one (at most 200)."""
        served: list[tuple[int, str]] = []
        with anyio.fail_after(120):
            while not want <= {worker for worker, _ in served} and len(served) < 200:
                async with httpx.AsyncClient(http1=not http2, http2=http2, verify=verify or True, timeout=10) as client:
                    answer = await client.get(f"{url}/a/echo/")
                    assert answer.status_code == 200, answer.text
                    served.append((serving_worker(answer, proc.pid), answer.http_version))
        return served

    async with serve(tmp_path, config, "--workers", "2", start_timeout=60, verify=verify) as (url, proc):
        workers = await two_workers(proc.pid)
        await workers_started(tmp_path / "stderr", 2)
        served = await served_by(workers)
        assert {worker for worker, _ in served} == workers, served
        assert {version for _, version in served} == {"HTTP/2" if http2 else "HTTP/1.1"}

        killed = min(workers)
        os.kill(killed, signal.SIGKILL)
        replaced = await two_workers(proc.pid, without=killed)
        assert replaced - workers and proc.poll() is None  # a new worker; the server lives on
        await workers_started(tmp_path / "stderr", 3)
        served = await served_by(replaced)
        assert {worker for worker, _ in served} == replaced, served


@pytest.mark.parametrize("http_server", SERVERS)
async def test_a_worker_that_cannot_start_stops_the_server_with_status_3(upstream, tmp_path, http_server):
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    with socket.create_server(("127.0.0.1", 0)) as taken:  # no SO_REUSEPORT: the workers' ops listener cannot bind
        ops = f"127.0.0.1:{taken.getsockname()[1]}"
        write_config(config, server.url, "a", http_server=http_server, ops_listen=ops)
        argv = gatehouse("serve", "--config", str(config), "--port", str(free_port()), "--workers", "2")
        with anyio.fail_after(START_TIMEOUT):
            result = await anyio.run_process(argv, cwd=ROOT, env=child_env(), check=False)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 3, stderr  # was 0 under uvicorn: a server that never served looked like a clean stop
    assert f"ops_listen {ops}: Address already in use" in stderr


@pytest.mark.parametrize("http_server", SERVERS)
async def test_sigterm_to_the_whole_process_group_still_drains_for_drain_delay(upstream, tmp_path, http_server):
    """systemd's default ``KillMode=control-group`` and ``timeout`` signal every process of the group, so each
    worker gets SIGTERM twice: from there, and from the supervisor about half a second later."""
    server, _ = upstream
    config = tmp_path / "gatehouse.yaml"
    write_config(config, server.url, "a", http_server=http_server, drain_delay=3)
    async with serve(tmp_path, config, "--workers", "2", start_timeout=60, own_group=True) as (url, proc):
        await two_workers(proc.pid)
        signalled = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        draining_for = []
        with anyio.fail_after(30):
            while proc.poll() is None:
                with contextlib.suppress(httpx.TransportError):
                    if (await fresh_get(f"{url}/_gatehouse/readyz")).status_code == 503:
                        draining_for.append(time.monotonic() - signalled)
                await anyio.sleep(0.05)
        assert proc.returncode == 0
    # The listener stays open for drain_delay (3 s); a second SIGTERM used to end that wait at once.
    assert draining_for and max(draining_for) >= 2, draining_for
