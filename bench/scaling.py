"""How Gatehouse's cost grows with the work: connections, routes, per-route features, workers.

    python -m bench.scaling [--duration 5] [--repeat 3] [--quick] [--only c64,routes-1000]

Every case is Gatehouse (defaults, JSON access log on) in front of the nginx
upstream, fetching the ~100-byte JSON with wrk on its own core; each case
starts a fresh process. Rounds interleave the cases and medians are reported,
with each case's req/s and req per CPU-second relative to ``c64`` (one route,
64 connections, one worker).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench import nginx, targets, wrk
from bench.procs import REPO_ROOT, Cores, ServerFailed, cpu_seconds, free_port, process_tree, rss_mib
from bench.proxy import WARMUP_SECONDS, Bench

API_KEY = "bench-key-0123456789abcdef"
ORIGIN = "https://app.example"


def _many_routes(upstream: str) -> dict[str, Any]:
    routes = [{"name": f"r{n}", "prefix": f"/svc{n}/api", "upstream": upstream} for n in range(999)]
    return {"routes": [*routes, {"name": "bench", "prefix": "/", "upstream": upstream}]}


FEATURES: dict[str, dict[str, Any]] = {
    "auth": {"auth": {"type": "api_key", "keys": {"bench": "sha256:" + hashlib.sha256(API_KEY.encode()).hexdigest()}}},
    "rate_limit": {"rate_limit": {"limit": "1000000/second"}},  # by client address; never reached
    "cors": {"cors": {"allow_origins": [ORIGIN]}},
    "retries": {"retries": {"attempts": 2}},
}
FEATURE_HEADERS = (f"X-API-Key: {API_KEY}", f"Origin: {ORIGIN}")


def with_features(*features: str) -> Callable[[str], dict[str, Any]]:
    def settings(upstream: str) -> dict[str, Any]:
        route: dict[str, Any] = {"name": "bench", "prefix": "/", "upstream": upstream}
        for feature in features:
            route |= FEATURES[feature]
        return {"routes": [route]}

    return settings


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    connections: int = 64
    settings: Callable[[str], dict[str, Any]] | None = None
    workers: int = 1
    headers: tuple[str, ...] = field(default_factory=tuple)


CASES = (
    Case("c1", "1 connection"),
    Case("c64", "64 connections (the reference case)"),
    Case("c512", "512 connections"),
    Case("routes-1000", "1,000 routes configured, 64 connections", settings=_many_routes),
    *(
        Case(
            feature.replace("_", "-"),
            f"{feature} on the route, 64 connections",
            settings=with_features(feature),
            headers=FEATURE_HEADERS,
        )
        for feature in FEATURES
    ),
    Case(
        "all-features",
        "auth (API key) + rate limit + CORS + retries on the route, 64 connections",
        settings=with_features(*FEATURES),
        headers=FEATURE_HEADERS,
    ),
    Case("workers-2", "--workers 2 (both on the server core), 64 connections", workers=2),
)
BY_NAME = {case.name: case for case in CASES}
REFERENCE = "c64"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians reported (3)")
    parser.add_argument("--quick", action="store_true", help="2-second runs, one round")
    parser.add_argument("--only", help=f"comma list of cases: {','.join(BY_NAME)}")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeat = 2, 1
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BY_NAME)
    if unknown := [n for n in names if n not in BY_NAME]:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    args.cases = [BY_NAME[n] for n in names]
    return args


def measure(bench: Bench, case: Case, upstream: str) -> dict[str, Any]:
    port = free_port()
    settings = case.settings(upstream) if case.settings else None
    launch = targets.gatehouse(bench.workdir, port, upstream, bench.tools, settings=settings, workers=case.workers)
    url = f"http://127.0.0.1:{port}"
    server = bench.launch(f"{case.name}-{port}", launch.command, url + "/_gatehouse/healthz", python=True)
    try:
        target = url + nginx.SMALL_PATH
        run = dict(connections=case.connections, cores=bench.cores, headers=case.headers)
        wrk.run(bench.tools["wrk"], target, duration=WARMUP_SECONDS, latency=False, **run)  # type: ignore[arg-type]
        pids = process_tree(server.pid)
        cpu_before, started = cpu_seconds(pids), time.monotonic()
        result = wrk.run(bench.tools["wrk"], target, duration=bench.args.duration, **run)  # type: ignore[arg-type]
        cpu = 100 * (cpu_seconds(pids) - cpu_before) / (time.monotonic() - started)
        rss = rss_mib(pids)
    finally:
        bench.retire(server)
    return {
        "case": case.name,
        "what": case.what,
        "requests_per_sec": result.requests_per_sec,
        "p99_ms": result.p99_ms,
        "error_count": result.error_count,
        "errors": result.errors,
        "server_cpu_percent": round(cpu, 1),
        "req_per_cpu_s": round(result.requests_per_sec * 100 / cpu) if cpu else None,
        "rss_after_mib": rss,
        "raw": result.raw,
    }


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case, the round with the median req/s, carrying the median req per CPU-second of all rounds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["case"], []).append(row)
    out = []
    for group in groups.values():
        ordered = sorted(group, key=lambda row: row["requests_per_sec"])
        per_cpu = sorted(row["req_per_cpu_s"] for row in group if row["req_per_cpu_s"])
        median = {"req_per_cpu_s": per_cpu[(len(per_cpu) - 1) // 2]} if per_cpu else {}
        out.append({**ordered[(len(ordered) - 1) // 2], **median, "rounds": len(ordered)})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    reference = next((row for row in rows if row["case"] == REFERENCE), None)
    header = (
        f"{'case':<12} {'req/s':>8} {'vs c64':>7} {'p99':>9} {'cpu%':>5} {'req/cpu-s':>9} {'vs c64':>7} "
        f"{'RSS MiB':>7} {'errors':>6}  what"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        rel = rel_cpu = "-"
        if reference is not None:
            rel = f"{row['requests_per_sec'] / reference['requests_per_sec']:.2f}x"
            if row["req_per_cpu_s"] and reference["req_per_cpu_s"]:
                rel_cpu = f"{row['req_per_cpu_s'] / reference['req_per_cpu_s']:.2f}x"
        p99 = f"{row['p99_ms']:.1f}ms" if row["p99_ms"] is not None else "-"
        lines.append(
            f"{row['case']:<12} {row['requests_per_sec']:>8,.0f} {rel:>7} {p99:>9} "
            f"{row['server_cpu_percent']:>5.0f} {row['req_per_cpu_s'] or 0:>9,} {rel_cpu:>7} "
            f"{row['rss_after_mib']:>7.0f} {row['error_count']:>6}  {row['what']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tools = nginx.ensure_tools()
    cores = Cores.detect()
    started = datetime.now(UTC)
    load = os.getloadavg()[0]
    print(f"scaling: {len(args.cases)} case(s) x {args.repeat} round(s), {args.duration}s each; load {load:.2f}")
    bench = Bench(args, tools, cores)
    rows: list[dict[str, Any]] = []
    try:
        upstream = bench.upstream()
        for round_number in range(1, args.repeat + 1):
            print(f"-- round {round_number} of {args.repeat}", flush=True)
            for case in args.cases:
                try:
                    row = measure(bench, case, upstream)
                except (ServerFailed, RuntimeError) as exc:  # RuntimeError: wrk failed
                    print(f"skipping {case.name}: {exc}", flush=True)
                    continue
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    finally:
        bench.close()
    result = medians(rows)
    print()
    print(table(result))
    document = {
        "started": started.isoformat(timespec="seconds"),
        "params": {"duration_s": args.duration, "repeat": args.repeat, "cases": [c.name for c in args.cases]},
        "loadavg_at_start": round(load, 2),
        "scaling": result,
        "rounds": rows,
    }
    results = REPO_ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"scaling-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
