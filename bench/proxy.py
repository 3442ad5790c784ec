"""Proxy benchmark: Gatehouse against nginx, fastapi-proxy-lib, an aiohttp proxy and no proxy.

    python -m bench.proxy [--duration 10] [--connections 64] [--quick] [--only gatehouse,nginx]
                          [--repeat 3] [--baseline REV]

A. wrk (one thread, keep-alive, pinned to one core; the servers on the other) fetches
   a ~100-byte JSON and a 1 MiB body from an nginx upstream, directly and through each
   proxy, and reports req/s, p50, p99 and errors.
B. Peak RSS growth of the proxy while 1 GiB streams through it, down then up.

Results print as tables and are written to bench/results/<timestamp>.json.
See bench/README.md for the method and the latest figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import memory, nginx, report, targets, wrk
from bench.machine import SNIFFIO, SNIFFIO_NOTE, machine_info
from bench.procs import (
    REPO_ROOT,
    Cores,
    Server,
    ServerFailed,
    cpu_seconds,
    free_port,
    process_tree,
    python_command,
    python_env,
    rss_mib,
    start,
    stop,
    wait_ready,
)

RESPONSES = {"small": nginx.SMALL_PATH, "1mib": nginx.LARGE_PATH}
RESULTS_DIR = REPO_ROOT / "bench" / "results"
WARMUP_SECONDS = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--quick", action="store_true", help="2-second runs: a smoke test")
    parser.add_argument("--only", help=f"comma list of targets: {','.join(targets.TARGETS)}")
    parser.add_argument(
        "--memory-targets",
        default="gatehouse",
        help="comma list of proxies for the 1 GiB RSS test, or 'none' (default gatehouse)",
    )
    parser.add_argument("--stream-mib", type=int, default=1024, help="MiB streamed per direction (1024)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds over every target, interleaved; medians are reported (1)"
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="also run Gatehouse as of git revision REV (target gatehouse@REV)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 2
    args.targets = (
        _target_list(parser, args.only, targets.TARGETS)
        if args.only
        else [t for t in targets.TARGETS if t not in targets.ON_REQUEST]
    )
    memory_targets = [] if args.memory_targets == "none" else _target_list(parser, args.memory_targets)
    args.memory_targets = [t for t in memory_targets if t in args.targets]
    return args


def _target_list(
    parser: argparse.ArgumentParser, text: str, known: tuple[str, ...] = tuple(targets.LAUNCHERS)
) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if unknown := [name for name in names if name not in known]:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


class Bench:
    """Owns the temp dir and every process it starts; ``close`` stops them all."""

    def __init__(self, args: argparse.Namespace, tools: dict[str, str], cores: Cores) -> None:
        self.args, self.tools, self.cores = args, tools, cores
        self.workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
        self.servers: list[Server] = []

    def close(self) -> None:
        try:
            for server in reversed(self.servers):
                stop(server)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def launch(
        self,
        name: str,
        command: list[str],
        ready_url: str,
        python: bool,
        source: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Server:
        env = {**python_env(source), **(extra_env or {})} if python else None
        server = start(name, command, workdir=self.workdir, cores=self.cores, env=env)
        self.servers.append(server)
        wait_ready(server, ready_url)
        return server

    def retire(self, server: Server) -> None:
        stop(server)
        self.servers.remove(server)

    def upstream(self) -> str:
        port = free_port()
        www = self.workdir / "www"
        nginx.write_files(www)
        prefix = self.workdir / "upstream"
        prefix.mkdir()
        config = nginx.upstream_config(prefix, port, www)
        url = f"http://127.0.0.1:{port}"
        command = nginx.nginx_command(self.tools["nginx"], prefix, config, "upstream")
        self.launch("upstream", command, url + nginx.SMALL_PATH, python=False)
        return url

    def sink(self) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.launch("sink", python_command("bench.sink_upstream", "--port", str(port)), url, python=True)
        return url

    def proxy(self, target: str, upstream: str, ready_path: str) -> tuple[Server, str]:
        port = free_port()
        launch = targets.LAUNCHERS[target](self.workdir, port, upstream, self.tools)
        url = f"http://127.0.0.1:{port}"
        name = f"{target}-{port}"
        server = self.launch(name, launch.command, url + ready_path, launch.python, launch.source, launch.env)
        return server, url

    def throughput(self, target: str, base_url: str, server: Server | None) -> list[dict[str, Any]]:
        args, rows = self.args, []
        failures = check_responses(base_url)
        for response, path in RESPONSES.items():
            url = base_url + path
            wrk.run(
                self.tools["wrk"],
                url,
                duration=WARMUP_SECONDS,
                connections=args.connections,
                cores=self.cores,
                latency=False,
            )
            pids = process_tree(server.pid) if server else []
            cpu_before, started = cpu_seconds(pids), time.monotonic()
            result = wrk.run(
                self.tools["wrk"], url, duration=args.duration, connections=args.connections, cores=self.cores
            )
            elapsed = time.monotonic() - started
            cpu = round(100 * (cpu_seconds(pids) - cpu_before) / elapsed, 1) if server else None
            row = {"target": target, "response": response, "url": url, **result.as_dict()}
            # Requests per CPU-second of the proxy: steadier than req/s when other work shares the machine.
            row["req_per_cpu_s"] = round(result.requests_per_sec * 100 / cpu) if cpu else None
            row["rss_after_mib"] = rss_mib(pids) if server else None
            row["check_failures"] = [f for f in failures if f.startswith(response)]
            row["flagged"] = bool(result.error_count or row["check_failures"] or not result.requests)
            row["server_cpu_percent"] = cpu
            rows.append(row)
            print(report.throughput_table([row]).splitlines()[-1], flush=True)
        return rows

    def memory(self, target: str, direction: str, upstream: str) -> dict[str, Any]:
        size = self.args.stream_mib << 20
        path = nginx.HUGE_PATH if direction == "download" else "/upload"
        if direction == "download" and size != nginx.HUGE_SIZE:
            path = f"/stream-{size}.bin"
            with (self.workdir / "www" / path.lstrip("/")).open("wb") as body:
                body.truncate(size)
        server, url = self.proxy(target, upstream, nginx.SMALL_PATH if direction == "download" else "/")
        try:
            result = memory.measure(server.pid, direction, url + path, size)
        finally:
            self.retire(server)
        row = {"target": target, **result.as_dict()}
        print(report.memory_table([row]).splitlines()[-1], flush=True)
        return row


def check_responses(base_url: str) -> list[str]:
    """Confirm the proxy returns the upstream's bytes before timing it."""
    expected = {"small": nginx.SMALL_BODY, "1mib": bytes(range(256)) * (nginx.LARGE_SIZE // 256)}
    failures = []
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        for response, path in RESPONSES.items():
            try:
                got = client.get(base_url + path)
            except httpx.HTTPError as exc:
                failures.append(f"{response}: check failed: {type(exc).__name__}")
                continue
            if got.status_code != 200 or got.content != expected[response]:
                failures.append(f"{response}: check got HTTP {got.status_code}, {len(got.content)} bytes")
    return failures


def baseline_tree(revision: str, workdir: Path) -> Path:
    """``app/`` as of ``revision``, unpacked under ``workdir`` (the same dependencies serve both)."""
    tree = workdir / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", revision, "app"], cwd=REPO_ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def run(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    if not SNIFFIO and "fastapi-proxy-lib" in args.targets:
        print(SNIFFIO_NOTE, flush=True)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.2f} before the run; other work on the machine adds noise", flush=True)
    skipped = {t: why for t in args.targets if (why := targets.unavailable(t))}
    for target, why in skipped.items():
        print(f"skipping {target}: {why}", flush=True)
    upstream = bench.upstream()
    print(report.throughput_table([]), flush=True)
    all_rows: list[dict[str, Any]] = []
    # Rounds interleave the targets, so a noisy minute costs every target alike.
    for round_number in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"-- round {round_number} of {args.repeat}", flush=True)
        for target in args.targets:
            if target in skipped:
                continue
            if target == "direct":
                all_rows += bench.throughput(target, upstream, None)
                continue
            try:
                server, url = bench.proxy(target, upstream, nginx.SMALL_PATH)
            except ServerFailed as exc:
                skipped[target] = f"failed to start: {exc}"
                print(f"skipping {target}: {exc}", flush=True)
                continue
            try:
                all_rows += bench.throughput(target, url, server)
            finally:
                bench.retire(server)
    rows = report.medians(all_rows)
    memory_rows: list[dict[str, Any]] = []
    memory_targets = [t for t in args.memory_targets if t not in skipped]
    if memory_targets:
        print(f"\nstreaming {args.stream_mib} MiB each way through a fresh process:", flush=True)
        print(report.memory_header(), flush=True)
        sink = bench.sink()
        for target in memory_targets:
            for direction, origin in (("download", upstream), ("upload", sink)):
                try:
                    memory_rows.append(bench.memory(target, direction, origin))
                except ServerFailed as exc:
                    skipped[f"{target}/{direction}"] = f"failed to start: {exc}"
                    print(f"skipping {target}/{direction}: {exc}", flush=True)
    return {
        "loadavg_at_start": round(load, 2),
        "throughput": rows,
        "throughput_rounds": all_rows,
        "memory": memory_rows,
        "skipped": skipped,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally below stops every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        tools = nginx.ensure_tools()
    except (nginx.MissingTool, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cores = Cores.detect()
    if cores.client is not None:
        os.sched_setaffinity(0, {cores.client})  # our own streaming client stays off the servers' core
    started = datetime.now(UTC)
    bench = Bench(args, tools, cores)
    if args.baseline:
        name = f"gatehouse@{args.baseline}"
        targets.LAUNCHERS[name] = targets.gatehouse_from(baseline_tree(args.baseline, bench.workdir))
        at = args.targets.index("gatehouse") + 1 if "gatehouse" in args.targets else len(args.targets)
        args.targets.insert(at, name)
    try:
        outcome = run(args, bench)
    except ServerFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: stopping every server", file=sys.stderr)
        raise
    finally:
        bench.close()
    ratios = report.all_ratios(outcome["throughput"])
    print()
    print(report.throughput_table(outcome["throughput"]))
    print()
    print(report.ratios_text(ratios))
    print()
    print(report.memory_table(outcome["memory"]))
    document = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {
            "duration_s": args.duration,
            "connections": args.connections,
            "wrk": f"wrk -t1 -c{args.connections} -d{args.duration}s --latency",
            "warmup_s": WARMUP_SECONDS,
            "stream_mib": args.stream_mib,
            "targets": args.targets,
            "repeat": args.repeat,
            "baseline": args.baseline,
        },
        "machine": machine_info(tools, cores),
        **outcome,
        "ratios": ratios,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(REPO_ROOT)}")
    flagged = [f"{r['target']}/{r['response']}" for r in outcome["throughput"] if r["flagged"]]
    flagged += [f"{r['target']}/{r['direction']}" for r in outcome["memory"] if not r["ok"]]
    if flagged:
        print(f"flagged (errors or wrong bytes): {', '.join(flagged)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
