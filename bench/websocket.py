"""WebSocket benchmark: echo messages/s through Gatehouse and through nginx, in the same run.

    python -m bench.websocket [--duration 5] [--connections 1,64] [--size 64] [--repeat 3]

An echo upstream (``bench.ws_echo_upstream``: websockets' asyncio server) runs
on the server core with the proxy under test; this process, pinned to the other
core, keeps ``--connections`` WebSockets busy, each sending a ``--size``-byte
binary message and waiting for its echo before sending the next. Targets:
``direct`` (no proxy: the client and upstream's own ceiling), ``nginx``
(``proxy_pass`` with the Upgrade headers, as its documentation configures
WebSockets) and ``gatehouse`` (one route, defaults). Rounds interleave the
targets; the median round is reported, with Gatehouse's ratio to nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench import nginx, targets
from bench.machine import machine_info
from bench.procs import REPO_ROOT, Cores, Server, ServerFailed, free_port, python_command, python_env, start, stop

RESULTS_DIR = REPO_ROOT / "bench" / "results"
TARGETS = ("direct", "nginx", "gatehouse")
WARMUP_SECONDS = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.websocket", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    parser.add_argument("--connections", default="1,64", help="comma list of concurrent sockets (default 1,64)")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians reported (default 3)")
    parser.add_argument("--only", default=",".join(TARGETS), help=f"comma list of targets: {','.join(TARGETS)}")
    args = parser.parse_args(argv)
    args.connection_counts = [int(n) for n in args.connections.split(",") if n.strip()]
    args.targets = [t for t in args.only.split(",") if t.strip()]
    if unknown := [t for t in args.targets if t not in TARGETS]:
        parser.error(f"unknown target(s) {', '.join(unknown)}")
    return args


def nginx_websocket_config(prefix: Path, port: int, upstream_port: int) -> Path:
    body = f"""    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
        }}
    }}"""
    path = prefix / "websocket-proxy.conf"
    path.write_text(nginx._main_block(prefix, "websocket-proxy", body))
    return path


async def wait_ws(url: str, server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerFailed(f"{server.name} exited:\n{server.log_tail()}")
        try:
            async with connect(url, open_timeout=2, compression=None) as ws:
                await ws.send(b"ready?")
                await ws.recv()
                return
        except (OSError, TimeoutError, Exception):  # noqa: BLE001 # not up yet
            await asyncio.sleep(0.1)
    raise ServerFailed(f"{server.name} not echoing at {url} after {timeout:.0f}s:\n{server.log_tail()}")


async def echo_rate(url: str, connections: int, seconds: float, size: int) -> dict[str, Any]:
    """Messages echoed per second over ``connections`` sockets, each one message in flight."""
    payload = os.urandom(size)
    sockets = [await connect(url, compression=None, max_size=None) for _ in range(connections)]
    counts = [0] * connections
    errors = 0
    stop_at = 0.0

    async def drive(index: int) -> None:
        nonlocal errors
        ws = sockets[index]
        try:
            while time.monotonic() < stop_at:
                await ws.send(payload)
                if await ws.recv() != payload:
                    errors += 1
                counts[index] += 1
        except Exception:  # noqa: BLE001 # counted: a broken socket is a flagged run
            errors += 1

    try:
        stop_at = time.monotonic() + WARMUP_SECONDS
        await asyncio.gather(*(drive(i) for i in range(connections)))
        counts = [0] * connections
        started = time.monotonic()
        stop_at = started + seconds
        await asyncio.gather(*(drive(i) for i in range(connections)))
        elapsed = time.monotonic() - started
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "messages": sum(counts),
        "seconds": round(elapsed, 3),
        "per_second": round(sum(counts) / elapsed, 1),
        "errors": errors,
    }


class Bench:
    def __init__(self, cores: Cores, tools: dict[str, str]) -> None:
        self.cores, self.tools = cores, tools
        self.workdir = Path(tempfile.mkdtemp(prefix="gatehouse-ws-bench-"))
        self.servers: list[Server] = []

    def launch(self, name: str, command: list[str], python: bool) -> Server:
        server = start(name, command, workdir=self.workdir, cores=self.cores, env=python_env() if python else None)
        self.servers.append(server)
        return server

    def retire(self, server: Server) -> None:
        stop(server)
        self.servers.remove(server)

    def close(self) -> None:
        try:
            for server in reversed(self.servers):
                stop(server)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def proxy(self, target: str, upstream_port: int) -> tuple[Server, int]:
        port = free_port()
        if target == "nginx":
            prefix = self.workdir / f"nginx-{port}"
            prefix.mkdir()
            config = nginx_websocket_config(prefix, port, upstream_port)
            command = nginx.nginx_command(self.tools["nginx"], prefix, config, "websocket-proxy")
            return self.launch(f"nginx-{port}", command, python=False), port
        launch = targets.gatehouse(self.workdir, port, f"http://127.0.0.1:{upstream_port}", self.tools)
        return self.launch(f"gatehouse-{port}", launch.command, python=True), port


async def run(args: argparse.Namespace, bench: Bench) -> list[dict[str, Any]]:
    upstream_port = free_port()
    upstream = bench.launch("ws-upstream", python_command("bench.ws_echo_upstream", "--port", str(upstream_port)), True)
    await wait_ws(f"ws://127.0.0.1:{upstream_port}/", upstream)
    rows: list[dict[str, Any]] = []
    print(f"{'round':>5} {'target':<10} {'conns':>5} {'msg/s':>10} {'errors':>6}", flush=True)
    for round_number in range(1, args.repeat + 1):
        for target in args.targets:
            server, port = (None, upstream_port) if target == "direct" else bench.proxy(target, upstream_port)
            url = f"ws://127.0.0.1:{port}/"
            try:
                if server is not None:
                    await wait_ws(url, server)
                for connections in args.connection_counts:
                    result = await echo_rate(url, connections, args.duration, args.size)
                    row = {"round": round_number, "target": target, "connections": connections, **result}
                    rows.append(row)
                    print(
                        f"{round_number:>5} {target:<10} {connections:>5} {result['per_second']:>10,.0f}"
                        f" {result['errors']:>6}",
                        flush=True,
                    )
            finally:
                if server is not None:
                    bench.retire(server)
    return rows


def medians(rows: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    groups: dict[tuple[str, int], list[float]] = {}
    for row in rows:
        groups.setdefault((row["target"], row["connections"]), []).append(row["per_second"])
    return {key: statistics.median(values) for key, values in groups.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        tools = nginx.ensure_tools()
    except nginx.MissingTool as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cores = Cores.detect()
    if cores.client is not None:
        os.sched_setaffinity(0, {cores.client})
    started = datetime.now(UTC)
    bench = Bench(cores, tools)
    try:
        rows = asyncio.run(run(args, bench))
    except ServerFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.close()
    table = medians(rows)
    print(f"\nmedian of {args.repeat} round(s), {args.size}-byte messages, one in flight per socket:")
    print(f"{'target':<10} " + " ".join(f"{f'{n} conn msg/s':>16}" for n in args.connection_counts))
    for target in args.targets:
        print(f"{target:<10} " + " ".join(f"{table[(target, n)]:>16,.0f}" for n in args.connection_counts))
    ratios = {}
    if "gatehouse" in args.targets and "nginx" in args.targets:
        ratios = {n: round(table[("gatehouse", n)] / table[("nginx", n)], 2) for n in args.connection_counts}
        print("gatehouse / nginx: " + ", ".join(f"{n} conn {r:.2f}" for n, r in ratios.items()))
    document = {
        "started": started.isoformat(timespec="seconds"),
        "params": {
            "duration_s": args.duration,
            "connections": args.connection_counts,
            "size": args.size,
            "repeat": args.repeat,
            "targets": args.targets,
        },
        "machine": machine_info(tools, cores),
        "rounds": rows,
        "medians": {f"{t}/{n}": v for (t, n), v in table.items()},
        "gatehouse_over_nginx": ratios,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"websocket-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
