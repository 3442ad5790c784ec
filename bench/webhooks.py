"""Webhook benchmark: intake (signed webhooks acknowledged per second) and delivery throughput.

For each store (SQLite, then PostgreSQL) it starts ``gatehouse serve`` as a real
process with one Standard Webhooks endpoint and a retry schedule of ``[]``
(one attempt, then dead), and then:

1. **intake**: wrk (C, one thread) POSTs signed webhooks for ``--duration``
   seconds from ``--concurrency`` keep-alive connections while the delivery
   target is down; the figure is acknowledged (202) webhooks per second, each
   one committed to the store before its answer. The target's circuit breaker
   (on by default) opens after its first 5 refused attempts, so the rest wait
   pending with no attempt made. The requests (``--events`` of them, each with its
   own id) are signed before the clock starts, so the client costs a few
   percent of a core (printed: ``wrk cpu-s``) and the figure is Gatehouse's;
2. **delivery**: starts the target (``bench.sink_upstream``), replays every dead
   delivery with the ops API, and times until the store shows all of them
   delivered: deliveries per second through the dispatcher, from the moment the
   target is back (the breaker's trial goes within its ``reset_timeout``, 1 s here).

``--intake-target refused`` turns the breaker off: each webhook's immediate attempt is
made and refused (dead at once, the retry schedule is ``[]``), and delivery replays
them all.

``--intake-target stalled`` measures intake without the failed attempt: the target
accepts connections and never answers, so its first attempts (its in-flight cap) hang
and every later webhook is stored, claimed, refused by that cap and handed back
pending, with no connection made (what intake costs when the target is slow). For
delivery the held connections are closed (those attempts are dead, then replayed) and
the dispatcher drains the pending backlog to ``bench.sink_upstream`` by polling.

    python -m bench.webhooks [--duration 10] [--concurrency 32] [--only sqlite,postgres]
                             [--events 30000] [--dispatch-concurrency 100] [--dispatch-batch 200]
                             [--intake-target down|refused|stalled]

Ack latency is each webhook's time from request to 202 as wrk saw it (p50, p99).
``/cpu-s`` is per CPU-second of the Gatehouse process (user + system), which moves
much less than the rate when other jobs share the machine; the load average is printed.

PostgreSQL is the local cluster at ``--postgres`` (default the tests' URL); a
database of its own is created and dropped. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import sqlite3
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

from bench import nginx
from bench.procs import cpu_seconds, free_port
from tests.webhooks import ADMIN_TOKEN, SECRET, json_body, standard_headers

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of intake per store (default 10)")
    parser.add_argument("--events", type=int, default=100000, help="webhooks signed in advance, at most sent (100000)")
    parser.add_argument("--concurrency", type=int, default=32, help="senders in parallel (default 32)")
    parser.add_argument("--only", default="sqlite,postgres", help="stores: sqlite,postgres")
    parser.add_argument("--dispatch-concurrency", type=int, default=100, help="webhook_dispatch_concurrency (100)")
    parser.add_argument("--dispatch-batch", type=int, default=200, help="webhook_dispatch_batch (200)")
    parser.add_argument(
        "--intake-target",
        choices=("down", "refused", "stalled"),
        default="down",
        help="the target during intake: down (its breaker opens after 5 refused attempts), refused (breaker off: "
        "each webhook's attempt is refused) or stalled (attempts hang)",
    )
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


class StatusCounts:
    """Deliveries by status, read without disturbing the server: a read-only SQLite connection
    (a WAL reader takes no lock; the store's own transactions are BEGIN IMMEDIATE, the write
    lock, which would stall Gatehouse's commits) or one asyncpg connection, one COUNT per poll."""

    _QUERY = "SELECT status, count(*) FROM webhook_deliveries GROUP BY status"

    def __init__(self, store_url: str) -> None:
        self._url = make_url(store_url)
        self._sqlite: sqlite3.Connection | None = None
        self._postgres: asyncpg.Connection | None = None

    async def get(self) -> dict[str, int]:
        if self._url.get_backend_name() == "sqlite":
            if self._sqlite is None:
                self._sqlite = sqlite3.connect(f"file:{self._url.database}?mode=ro", uri=True)
            return dict(self._sqlite.execute(self._QUERY).fetchall())
        if self._postgres is None:
            self._postgres = await asyncpg.connect(
                self._url.set(drivername="postgresql").render_as_string(hide_password=False)
            )
        return {row[0]: row[1] for row in await self._postgres.fetch(self._QUERY)}

    async def aclose(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._postgres is not None:
            await self._postgres.close()

    async def wait(self, status: str, n: int, timeout: float = 300.0, *, or_dead: bool = False) -> int:
        """Wait until ``n`` deliveries are ``status`` (``or_dead``: or dead); returns how many are ``status``."""
        deadline = time.monotonic() + timeout
        while True:
            counts = await self.get()
            done = counts.get(status, 0)
            if done + (counts.get("dead", 0) if or_dead else 0) >= n:
                return done
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {n} deliveries {status} after {timeout}s")
            await asyncio.sleep(0.05)


class StalledTarget:
    """A target that accepts connections and never answers: attempts to it hang until ``release``."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def start(self, port: int) -> None:
        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._held.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", port, reuse_address=True)

    async def stop_listening(self) -> int:
        """Free the port for the real target, keeping the held attempts hanging; returns how many."""
        if self._server is not None:
            self._server.close()
            self._server = None
        return len(self._held)

    def release(self) -> None:
        """Close the held connections: those attempts fail (and, with no retries, are dead)."""
        for writer in self._held:
            writer.close()
        self._held.clear()


# wrk sends the pre-signed requests in order, each once (past the last one it repeats it: a duplicate,
# answered 200, which fails the run), for --duration seconds; done() reports the 202s and latency.
_WRK_SCRIPT = """
local requests = dofile(%(requests)s)
local sent = 0
accepted, answered = 0, 0
request = function()
  sent = sent + 1
  return requests[math.min(sent, #requests)]
end
response = function(status, headers, body)
  answered = answered + 1
  if status == 202 then accepted = accepted + 1 end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local t = threads[1]
  io.write(string.format("RESULT accepted=%%d answered=%%d seconds=%%.6f p50=%%d p99=%%d\\n",
    t:get("accepted"), t:get("answered"), summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_requests(url: str, events: int) -> str:
    """A Lua chunk returning ``events`` signed webhook requests, each with its own id."""
    target = httpx.URL(url)
    run = uuid.uuid4().hex[:8]
    lines = ["return {"]
    for n in range(events):
        body = json_body({"n": n, "type": "invoice.paid", "data": {"id": f"in_{n}", "amount": 1999}})
        headers = standard_headers(f"msg_{run}_{n}", body)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        raw = (
            f"POST {target.raw_path.decode()} HTTP/1.1\r\nHost: {target.netloc.decode()}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        lines.append(json.dumps(raw.decode()) + ",")  # a JSON string is a valid Lua string here (ASCII)
    lines.append("}")
    return "\n".join(lines)


def _send(url: str, args: argparse.Namespace, server_pid: int, tmp: Path) -> dict[str, float]:
    """POST pre-signed webhooks with wrk for ``--duration`` seconds (``--concurrency`` connections):
    the rate, the ack latency and the server's CPU seconds. Signing happens before the clock starts, and wrk
    (C, one thread) needs a few percent of a core, so the figure is Gatehouse's, not the client's."""
    wrk = nginx.find_tool("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    requests = tmp / "requests.lua"
    requests.write_text(_lua_requests(url, args.events), encoding="utf-8")
    script = tmp / "webhooks.lua"
    script.write_text(_WRK_SCRIPT % {"requests": json.dumps(str(requests))}, encoding="utf-8")
    command = [wrk, "-t1", f"-c{args.concurrency}", f"-d{args.duration}s", "--timeout", "10s", "-s", str(script), url]
    cpu_before, started = cpu_seconds([server_pid]), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 60, check=False)
    cpu_after, finished = cpu_seconds([server_pid]), resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"RESULT accepted=(\d+) answered=(\d+) seconds=([\d.]+) p50=(\d+) p99=(\d+)", done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    accepted, answered = int(match[1]), int(match[2])
    if accepted < answered:
        raise RuntimeError(f"{answered - accepted} of {answered} webhooks not answered 202 (more than --events?)")
    seconds = float(match[3])
    client_cpu = finished.ru_utime + finished.ru_stime - started.ru_utime - started.ru_stime
    return {
        "intake_per_s": answered / seconds,
        "ack_p50_ms": int(match[4]) / 1000,
        "ack_p99_ms": int(match[5]) / 1000,
        "intake_server_cpu_s": cpu_after - cpu_before,
        "intake_client_cpu_s": client_cpu,
        "answered": answered,
    }


async def bench_store(name: str, store_url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    gh_port, target_port = free_port(), free_port()
    stalled = StalledTarget() if args.intake_target == "stalled" else None
    # A stalled attempt must outlast the intake phase, and the lease the attempt.
    timeout = 5 if stalled is None else args.duration + 30
    config = {
        "log_level": "warning",
        "admin_token": ADMIN_TOKEN,
        "webhook_store": store_url,
        "webhook_dispatch_interval": 0.2,
        "webhook_dispatch_concurrency": args.dispatch_concurrency,
        "webhook_dispatch_batch": args.dispatch_batch,
        "webhook_lease_seconds": max(60, timeout + 30),
        "webhooks": [
            {
                "name": "bench",
                "path": "/hooks/bench",
                "verify": {"scheme": "standard", "secrets": [SECRET]},
                "deliver_to": [
                    {
                        "name": "sink",
                        "url": f"http://127.0.0.1:{target_port}/in",
                        "timeout": timeout,
                        "circuit_breaker": args.intake_target != "refused" and {"reset_timeout": 1.0},
                    }
                ],
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
        counts = StatusCounts(store_url)
        try:
            if stalled is not None:
                await stalled.start(target_port)
            intake = await asyncio.to_thread(_send, base + "/hooks/bench", args, proc.pid, tmp)
            if args.intake_target == "refused":
                # Each immediate attempt found the target down (requests still in flight at the end may add a few).
                await counts.wait("dead", int(intake["answered"]))
            elif stalled is not None:
                intake["stalled_attempts"] = await stalled.stop_listening()
            sink = [sys.executable, "-m", "bench.sink_upstream", "--port", str(target_port)]
            with _process(sink, tmp / f"{name}-sink.log") as sink_proc:
                await _wait_ok(f"http://127.0.0.1:{target_port}/", sink_proc, tmp / f"{name}-sink.log")
                async with httpx.AsyncClient(trust_env=False, timeout=30.0) as admin:
                    answered = int(intake["answered"])
                    if stalled is None:
                        await asyncio.sleep(1.0)  # the last webhooks' attempts are recorded
                    cpu_before, started = cpu_seconds([proc.pid]), time.perf_counter()
                    if stalled is not None:
                        # The held attempts fail (dead) and free their slots: the dispatcher drains the backlog.
                        stalled.release()
                        await counts.wait("delivered", answered, or_dead=True)
                    replay = await admin.post(
                        base + "/_gatehouse/webhooks/endpoints/bench/replay-dead",
                        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                    )
                    replayed = replay.json().get("replayed", 0) if replay.status_code == 202 else 0
                    if replay.status_code != 202 or (args.intake_target == "refused" and replayed < answered):
                        raise RuntimeError(f"replay-dead answered {replay.status_code} {replay.text}")
                    delivered = await counts.wait("delivered", answered, or_dead=True)
                    delivery_s = time.perf_counter() - started
                    delivery_cpu = cpu_seconds([proc.pid]) - cpu_before
                    if delivered < answered:  # an attempt timed out on a loaded machine: say so
                        print(f"{name}: {answered - delivered} of {answered} deliveries failed", file=sys.stderr)
        finally:
            await counts.aclose()
    return {
        "store": name,
        "events": int(intake["answered"]),
        "concurrency": args.concurrency,
        **intake,
        "intake_per_cpu_s": intake["answered"] / max(intake["intake_server_cpu_s"], 0.01),
        "delivery_per_s": answered / delivery_s,
        "delivery_per_cpu_s": answered / max(delivery_cpu, 0.01),
        "load_average": os.getloadavg()[0],
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
        f"target during intake {args.intake_target}, "
        "SQLite WAL synchronous=FULL; every webhook committed before its 202"
    )
    print(
        f"{'store':<10} {'events':>7} {'conc':>5} {'intake/s':>9} {'/cpu-s':>7} {'ack p50':>9} {'ack p99':>9} "
        f"{'wrk cpu-s':>9} {'delivery/s':>10} {'/cpu-s':>7} {'load':>5}"
    )
    for r in results:
        print(
            f"{r['store']:<10} {r['events']:>7} {r['concurrency']:>5} {r['intake_per_s']:>9.0f} "
            f"{r['intake_per_cpu_s']:>7.0f} {r['ack_p50_ms']:>7.1f}ms {r['ack_p99_ms']:>7.1f}ms "
            f"{r['intake_client_cpu_s']:>9.2f} {r['delivery_per_s']:>10.0f} {r['delivery_per_cpu_s']:>7.0f} "
            f"{r['load_average']:>5.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
