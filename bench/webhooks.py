"""Webhook benchmark: intake (signed webhooks acknowledged per second) and delivery throughput.

For each store (SQLite, then PostgreSQL) it starts ``gatehouse serve`` as a real
process with one Standard Webhooks endpoint and a retry schedule of ``[]``
(one attempt, then dead), and then:

1. **intake**: POSTs ``--events`` signed webhooks from ``--concurrency``
   keep-alive connections while the delivery target is down; the figure is
   acknowledged (202) webhooks per second, each one committed to the store
   before its answer (the immediate failed attempt per event runs meanwhile);
2. **delivery**: starts the target (``bench.sink_upstream``), replays every dead
   delivery with the ops API, and times until the store shows all of them
   delivered: deliveries per second through the dispatcher.

    python -m bench.webhooks [--events 2000] [--concurrency 32] [--only sqlite,postgres]
                             [--dispatch-concurrency 100] [--dispatch-batch 200]

Ack latency is each webhook's time from request to 202, as the sender saw it (p50, p99).

PostgreSQL is the local cluster at ``--postgres`` (default the tests' URL); a
database of its own is created and dropped. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml
from sqlalchemy.engine import make_url

from app.webhooks.store import DeliveryStore
from bench.procs import free_port
from tests.webhooks import ADMIN_TOKEN, SECRET, json_body, standard_headers

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="webhooks per store (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="senders in parallel (default 32)")
    parser.add_argument("--only", default="sqlite,postgres", help="stores: sqlite,postgres")
    parser.add_argument("--dispatch-concurrency", type=int, default=100, help="webhook_dispatch_concurrency (100)")
    parser.add_argument("--dispatch-batch", type=int, default=200, help="webhook_dispatch_batch (200)")
    parser.add_argument("--postgres", default=POSTGRES_URL, help="a database on the cluster to create one next to")
    return parser.parse_args(argv)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    return env | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


async def _wait_ok(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited:\n{log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@contextlib.asynccontextmanager
async def _postgres_database(base_url: str) -> AsyncIterator[str]:
    base = make_url(base_url)
    name = f"gatehouse_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(base.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _count(store: DeliveryStore, status: str, limit: int) -> int:
    return len(await store.list_deliveries(status=status, limit=limit))  # type: ignore[arg-type]


async def _wait_count(
    store: DeliveryStore, status: str, n: int, timeout: float = 300.0, *, or_dead: bool = False
) -> int:
    """Wait until ``n`` deliveries are ``status`` (with ``or_dead``: finished either way); how many are ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        done = await _count(store, status, n + 1)
        finished = done + (await _count(store, "dead", n + 1) if or_dead else 0)
        if finished >= n:
            return done
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {n} deliveries {status} after {timeout}s")
        await asyncio.sleep(0.05)


async def _send(url: str, events: int, concurrency: int) -> tuple[float, list[float]]:
    """POST the webhooks; returns the wall time and each one's time to acknowledge (seconds)."""
    todo = iter(range(events))
    latencies: list[float] = []
    bodies = {
        n: json_body({"n": n, "type": "invoice.paid", "data": {"id": f"in_{n}", "amount": 1999}}) for n in range(events)
    }

    async def sender(client: httpx.AsyncClient) -> None:
        for n in todo:
            body = bodies[n]
            sent = time.perf_counter()
            response = await client.post(url, content=body, headers=standard_headers(f"msg_{n}", body))
            latencies.append(time.perf_counter() - sent)
            if response.status_code != 202:
                raise RuntimeError(f"webhook {n}: {response.status_code} {response.text}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(trust_env=False, timeout=30.0, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def bench_store(name: str, store_url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    gh_port, target_port = free_port(), free_port()
    config = {
        "log_level": "warning",
        "admin_token": ADMIN_TOKEN,
        "webhook_store": store_url,
        "webhook_dispatch_interval": 0.2,
        "webhook_dispatch_concurrency": args.dispatch_concurrency,
        "webhook_dispatch_batch": args.dispatch_batch,
        "webhooks": [
            {
                "name": "bench",
                "path": "/hooks/bench",
                "verify": {"scheme": "standard", "secrets": [SECRET]},
                "deliver_to": [{"name": "sink", "url": f"http://127.0.0.1:{target_port}/in", "timeout": 5}],
                "retry": {"schedule": []},
            }
        ],
    }
    config_path = tmp / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    serve = [sys.executable, "-m", "app.cli", "serve", "--config", str(config_path), "--port", str(gh_port)]
    base = f"http://127.0.0.1:{gh_port}"
    with _process(serve, tmp / f"{name}-gatehouse.log") as proc:
        await _wait_ok(base + "/_gatehouse/healthz", proc, tmp / f"{name}-gatehouse.log")
        store = await DeliveryStore.open(store_url)
        try:
            intake_s, latencies = await _send(base + "/hooks/bench", args.events, args.concurrency)
            await _wait_count(store, "dead", args.events)  # each immediate attempt found the target down
            sink = [sys.executable, "-m", "bench.sink_upstream", "--port", str(target_port)]
            with _process(sink, tmp / f"{name}-sink.log") as sink_proc:
                await _wait_ok(f"http://127.0.0.1:{target_port}/", sink_proc, tmp / f"{name}-sink.log")
                async with httpx.AsyncClient(trust_env=False, timeout=30.0) as admin:
                    started = time.perf_counter()
                    replay = await admin.post(
                        base + "/_gatehouse/webhooks/endpoints/bench/replay-dead",
                        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                    )
                    if replay.json() != {"replayed": args.events}:
                        raise RuntimeError(f"replay-dead answered {replay.status_code} {replay.text}")
                    delivered = await _wait_count(store, "delivered", args.events, or_dead=True)
                    delivery_s = time.perf_counter() - started
                    if delivered < args.events:  # an attempt timed out on a loaded machine: say so
                        print(f"{name}: {args.events - delivered} of {args.events} deliveries failed", file=sys.stderr)
        finally:
            await store.aclose()
    return {
        "store": name,
        "events": args.events,
        "concurrency": args.concurrency,
        "intake_per_s": args.events / intake_s,
        "ack_p50_ms": _percentile(latencies, 0.50) * 1000,
        "ack_p99_ms": _percentile(latencies, 0.99) * 1000,
        "delivery_per_s": args.events / delivery_s,
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-webhooks-") as tmp_name:
        tmp = Path(tmp_name)
        for name in args.only.split(","):
            if name == "sqlite":
                results.append(await bench_store("sqlite", f"sqlite:///{tmp / 'webhooks.db'}", args, tmp))
            elif name == "postgres":
                async with _postgres_database(args.postgres) as url:
                    results.append(await bench_store("postgres", url, args, tmp))
            else:
                raise SystemExit(f"unknown store {name!r}")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    print(
        f"settings: webhook_dispatch_concurrency={args.dispatch_concurrency} "
        f"webhook_dispatch_batch={args.dispatch_batch} webhook_dispatch_interval=0.2, one worker, "
        "SQLite WAL synchronous=FULL; every webhook committed before its 202"
    )
    print(f"{'store':<10} {'events':>7} {'conc':>5} {'intake/s':>10} {'ack p50':>9} {'ack p99':>9} {'delivery/s':>11}")
    for r in results:
        print(
            f"{r['store']:<10} {r['events']:>7} {r['concurrency']:>5} {r['intake_per_s']:>10.0f} "
            f"{r['ack_p50_ms']:>7.1f}ms {r['ack_p99_ms']:>7.1f}ms {r['delivery_per_s']:>11.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
