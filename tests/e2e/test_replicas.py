"""Three ``gatehouse serve`` replicas behind a real HAProxy, sharing one Redis and one PostgreSQL.

HAProxy (Debian's package, installed by ``scripts/test-services``) balances round-robin and
health-checks ``/readyz`` every 200 ms; it retries only what never reached a replica
(``retry-on conn-failure``). Under a bounded load of proxied requests and signed webhooks:

- a rolling restart (SIGTERM each replica in turn, start it again, wait until it is ready)
  drops no request: ``drain_delay`` keeps each replica serving, with ``/readyz`` 503,
  until HAProxy has taken it out;
- a rate limit of N per minute allows N requests across the three, not 3N;
- every acknowledged webhook is delivered, although the target answers slowly, so each
  replica stops with deliveries in flight;
- a changed config file reaches every replica that reloads (SIGHUP).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg
import httpx
import pytest
import yaml

from tests.e2e.test_cli import ROOT, START_TIMEOUT, STOP_TIMEOUT, child_env, free_port, gatehouse
from tests.e2e.test_webhook_crash import fresh_postgres_database
from tests.servers import run_uvicorn
from tests.webhooks import SECRET, RecordingTarget, json_body, standard_headers

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REPLICAS = 3
LIMIT = 6  # per minute, across all replicas
LOAD_WORKERS = 3  # concurrent proxied requests during the restart
HAPROXY = "/usr/sbin/haproxy"


def write_settings(path: Path, *, upstream: str, store: str, sink: str, route: str, extra_route: bool) -> None:
    routes = [
        {"name": f"{route}-api", "prefix": "/api", "upstream": upstream},
        {"name": route, "prefix": "/limited", "upstream": upstream, "rate_limit": {"limit": f"{LIMIT}/minute"}},
    ]
    if extra_route:
        routes.append({"name": f"{route}-new", "prefix": "/new", "upstream": upstream})
    settings = {
        "log_level": "warning",
        "access_log": "off",
        "drain_delay": 2.0,  # > HAProxy's inter 250 ms x fall 2, with room for a busy machine
        "shutdown_grace": 5,
        "redis_url": "redis://127.0.0.1:6379/0",
        "webhook_store": store,
        "webhook_dispatch_interval": 0.2,
        "webhook_lease_seconds": 12,
        "routes": routes,
        "webhooks": [
            {
                "name": "orders",
                "path": "/hooks/orders",
                "verify": {"scheme": "standard", "secrets": [SECRET]},
                "deliver_to": [{"name": "sink", "url": sink, "timeout": 10}],
                "retry": {"schedule": [0.5] * 50, "jitter": 0.1},
            }
        ],
    }
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")


def haproxy_config(port: int, stats_port: int, replica_ports: list[int]) -> str:
    servers = "\n".join(f"    server g{i} 127.0.0.1:{p} check" for i, p in enumerate(replica_ports))
    return (
        textwrap.dedent(
            f"""\
        global
            maxconn 512
        defaults
            mode http
            timeout connect 2s
            timeout client 30s
            timeout server 30s
            retries 3
            option redispatch 1
            retry-on conn-failure
        frontend stats
            bind 127.0.0.1:{stats_port}
            stats enable
            stats uri /stats
        frontend gateway
            bind 127.0.0.1:{port}
            default_backend replicas
        backend replicas
            balance roundrobin
            option httpchk GET /_gatehouse/readyz
            http-check expect status 200
            timeout check 2s
            default-server inter 250ms fall 2 rise 1
        """
        )
        + servers
        + "\n"
    )


class Replica:
    def __init__(self, name: str, config: Path, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = gatehouse("serve", "--config", str(self.config), "--host", "127.0.0.1", "--port", str(self.port))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT)

    async def ready(self, client: httpx.AsyncClient) -> None:
        with anyio.fail_after(START_TIMEOUT * 2):
            while True:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text(errors="replace")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.url}/_gatehouse/readyz")).status_code == 200:
                        return
                await anyio.sleep(0.1)

    async def stop(self) -> int:
        self.terminate()
        return await self.exited()

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def exited(self) -> int:
        assert self.proc is not None
        with anyio.fail_after(STOP_TIMEOUT):
            while self.proc.poll() is None:
                await anyio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


async def all_up(client: httpx.AsyncClient, stats_port: int) -> None:
    """Wait until HAProxy's own stats say every replica is UP (it has seen /readyz pass)."""
    with anyio.fail_after(20):
        while True:
            with contextlib.suppress(httpx.TransportError):
                csv = (await client.get(f"http://127.0.0.1:{stats_port}/stats;csv")).text
                rows = [line.split(",") for line in csv.splitlines() if line.startswith("replicas,g")]
                if len(rows) == REPLICAS and all(row[17] == "UP" for row in rows):
                    return
            await anyio.sleep(0.1)


@contextlib.asynccontextmanager
async def replicas_behind_haproxy(tmp_path: Path, config: Path) -> AsyncIterator[tuple[str, int, list[Replica]]]:
    replicas = [Replica(f"replica-{i}", config, tmp_path) for i in range(REPLICAS)]
    port, stats_port = free_port(), free_port()
    (tmp_path / "haproxy.cfg").write_text(haproxy_config(port, stats_port, [r.port for r in replicas]))
    haproxy_log = (tmp_path / "haproxy.log").open("wb")
    haproxy = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=haproxy_log, stderr=subprocess.STDOUT
    )
    try:
        for replica in replicas:  # all three start at once; each migrates the shared store safely
            replica.start()
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            for replica in replicas:
                await replica.ready(client)
            await all_up(client, stats_port)
        yield f"http://127.0.0.1:{port}", stats_port, replicas
    finally:
        for replica in replicas:
            replica.kill()
        haproxy.terminate()
        haproxy.wait(timeout=STOP_TIMEOUT)
        haproxy_log.close()


async def test_three_replicas_behind_haproxy_restart_limit_deliver_and_reload_together(tmp_path, postgres_url):
    del postgres_url  # the fixture makes sure PostgreSQL is up
    route = f"replicas-{uuid.uuid4().hex[:12]}"  # a fresh rate-limit budget in a Redis that outlives test runs
    # Slower than drain_delay: each replica's lifespan shutdown interrupts attempts still in flight.
    sink = RecordingTarget(delay=3.0)
    sink_port = free_port()
    upstream_app = RecordingTarget()  # any 204 will do for the proxied load
    config = tmp_path / "gatehouse.yaml"
    async with (
        fresh_postgres_database() as store,
        run_uvicorn(sink, port=sink_port),
        run_uvicorn(upstream_app) as upstream,
    ):
        options = {"upstream": upstream.url, "store": store, "sink": f"http://127.0.0.1:{sink_port}/in", "route": route}
        write_settings(config, **options, extra_route=False)
        async with replicas_behind_haproxy(tmp_path, config) as (url, stats_port, replicas):
            async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
                # Rate limit: LIMIT per minute across the three, round-robin spreads the requests over them.
                limited = [(await client.get(f"{url}/limited/x")).status_code for _ in range(LIMIT * 3)]
                assert limited.count(204) == LIMIT and limited.count(429) == LIMIT * 2, limited

                # Rolling restart under load: proxied requests and webhooks all the while.
                failures: list[str] = []
                outcome = {"requests": 0, "webhooks": 0}
                acked: set[str] = set()
                restarted = anyio.Event()

                async def load() -> None:
                    while not restarted.is_set():
                        try:
                            response = await client.get(f"{url}/api/x")
                            if response.status_code != 204:
                                failures.append(f"GET {response.status_code} {response.text[:200]}")
                        except httpx.TransportError as exc:
                            failures.append(f"GET {exc!r}")
                        outcome["requests"] += 1
                        await anyio.sleep(0.01)

                async def post_webhooks() -> None:
                    while not restarted.is_set():
                        msg_id = f"msg_{len(acked) + len(failures):05d}_{uuid.uuid4().hex[:6]}"
                        body = json_body({"id": msg_id})
                        try:
                            response = await client.post(
                                f"{url}/hooks/orders", content=body, headers=standard_headers(msg_id, body)
                            )
                            if response.status_code == 202:
                                acked.add(response.json()["event_id"])
                            else:
                                failures.append(f"POST {response.status_code} {response.text[:200]}")
                        except httpx.TransportError as exc:
                            failures.append(f"POST {exc!r}")
                        outcome["webhooks"] += 1
                        await anyio.sleep(0.05)

                async def rolling_restart() -> None:
                    async with httpx.AsyncClient(trust_env=False, timeout=2) as direct:
                        for replica in replicas:
                            await anyio.sleep(0.5)  # a little load on all three first
                            assert await replica.stop() == 0, replica.log.read_text(errors="replace")
                            replica.start()
                            await replica.ready(direct)
                            await all_up(direct, stats_port)  # HAProxy's next check (rise 1) brings it back
                    restarted.set()

                with anyio.fail_after(120):
                    async with anyio.create_task_group() as tasks:
                        for _ in range(LOAD_WORKERS):
                            tasks.start_soon(load)
                        tasks.start_soon(post_webhooks)
                        tasks.start_soon(rolling_restart)
                assert failures == [], failures[:10]
                assert outcome["requests"] >= 50 and len(acked) >= 20, outcome

                # Webhooks: every acknowledged event is delivered (at least once) ...
                conn = await asyncpg.connect(store, timeout=10)
                try:
                    with anyio.fail_after(60):
                        while True:
                            delivered, total = await conn.fetchrow(
                                "SELECT count(*) FILTER (WHERE status = 'delivered'), count(*) FROM webhook_deliveries"
                            )
                            if delivered == total >= len(acked):
                                break
                            await anyio.sleep(0.2)
                    # ... including those a stopping replica handed back mid-attempt, which another one completed.
                    interrupted = await conn.fetchval(
                        "SELECT count(DISTINCT delivery_id) FROM webhook_attempts"
                        " WHERE error = 'interrupted by shutdown'"
                    )
                finally:
                    await conn.close()
                assert {str(e) for e in acked} <= {r.headers["x-gatehouse-event-id"] for r in sink.received}
                assert interrupted >= 1, "no replica stopped mid-delivery"

                # Reload: the changed file reaches every replica that reloads.
                write_settings(config, **options, extra_route=True)
                async with httpx.AsyncClient(trust_env=False, timeout=2) as direct:
                    for replica in replicas:
                        assert (await direct.get(f"{replica.url}/new/x")).status_code == 404
                        assert replica.proc is not None
                        replica.proc.send_signal(signal.SIGHUP)
                    with anyio.fail_after(20):
                        for replica in replicas:
                            while (await direct.get(f"{replica.url}/new/x")).status_code != 204:
                                await anyio.sleep(0.1)
                for replica in replicas:  # all at once: each drains for drain_delay
                    replica.terminate()
                assert [await replica.exited() for replica in replicas] == [0] * REPLICAS
