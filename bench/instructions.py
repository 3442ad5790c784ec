"""CPU instructions per proxied request, counted by callgrind: repeatable on a shared, loaded machine.

    python -m bench.instructions [--baseline REV] [--response small|1mib] [--requests 400]
                                 [--connections 8] [--access-log json|off] [--reference]

wrk's req/s, and even requests per CPU-second, move by 10-30% when other jobs share
the machine; an instruction count does not (two runs of the same code agree within
0.3%). Gatehouse runs under ``valgrind --tool=callgrind`` in front of the nginx
upstream ``bench.proxy`` uses; a keep-alive client sends ``requests // 2`` warm-up
requests, the counters are zeroed (``callgrind_control -z``), then ``requests`` more
are sent and the counters dumped, so start-up and warm-up are not counted. With
``--baseline REV`` the same is done for ``app/`` as of ``REV`` and the ratio printed;
with ``--reference``, for the plain aiohttp proxy (``bench/ref_aiohttp_proxy.py``) too.

What it cannot see: time in the kernel (socket copies, syscalls) and cache misses;
it counts user-space instructions of the proxy process only. Use it for A/B of
changes to Python-level work, and ``bench.proxy`` for the whole picture.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import nginx, targets
from bench.procs import Cores, free_port, python_env, start, stop, wait_ready
from bench.proxy import Bench, baseline_tree
from bench.scaling import FEATURE_HEADERS, FEATURES, with_features

RESPONSES = {"small": nginx.SMALL_PATH, "1mib": nginx.LARGE_PATH}
READY_SECONDS = 300.0  # start-up under valgrind is 30-50x slower than without
# Under valgrind Gatehouse serves a few dozen requests a second, so the access log's 0.1 s flush
# interval would write batches of a few lines, where at full speed a batch fills (128 lines)
# first: each line would carry a share of a write, a join and a timer it does not carry at
# speed. The longest interval the settings allow keeps the batches as full as at speed.
SLOWED_FLUSH_INTERVAL = 60.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="also count Gatehouse as of git revision REV")
    parser.add_argument("--response", choices=sorted(RESPONSES), default="small", help="which response (small)")
    parser.add_argument("--requests", type=int, default=400, help="requests counted (400), after half as many")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (8)")
    parser.add_argument("--access-log", choices=("json", "off"), default="json", help="Gatehouse's access_log")
    parser.add_argument("--reference", action="store_true", help="also count the plain aiohttp proxy")
    parser.add_argument(
        "--features",
        default="",
        help=f"comma list of route features, as bench.scaling sets them: {','.join(FEATURES)} (none)",
    )
    args = parser.parse_args(argv)
    args.features = [f.strip() for f in args.features.split(",") if f.strip()]
    if unknown := [f for f in args.features if f not in FEATURES]:
        parser.error(f"unknown feature(s) {', '.join(unknown)}; choose from {', '.join(FEATURES)}")
    return args


async def _connection(port: int, path: str, count: int, headers: tuple[str, ...] = ()) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    fields = "".join(f"{field}\r\n" for field in headers)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{fields}\r\n".encode()
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:80]!r}")
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            lengths = [v for k, v in fields.items() if k.lower() == b"content-length"]
            if not lengths:
                raise RuntimeError("the benchmark expects a Content-Length response")
            await reader.readexactly(int(lengths[0]))
    finally:
        writer.close()


def send(
    port: int, path: str, requests: int, connections: int, headers: tuple[str, ...] = (), timeout: float = 1800.0
) -> None:
    """``requests`` GETs over ``connections`` keep-alive connections, bounded by ``timeout`` seconds."""
    per = max(1, requests // connections)

    async def run() -> None:
        jobs = (_connection(port, path, per, headers) for _ in range(connections))
        await asyncio.wait_for(asyncio.gather(*jobs), timeout)

    asyncio.run(run())


def count(bench: Bench, name: str, source: Path | None, upstream: str, args: argparse.Namespace) -> float:
    """Instructions per request of Gatehouse from ``source`` (None: this tree), or of the aiohttp proxy."""
    port = free_port()
    if name == "aiohttp":
        launch = targets.aiohttp_proxy(bench.workdir, port, upstream, bench.tools)
    else:
        settings = {
            "access_log": args.access_log,
            "access_log_flush_interval": SLOWED_FLUSH_INTERVAL,
            **(with_features(*args.features)(upstream)),
        }
        launch = targets.gatehouse(bench.workdir, port, upstream, bench.tools, settings=settings)
    out = bench.workdir / f"callgrind-{name}"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", *launch.command]
    server = start(name, command, workdir=bench.workdir, cores=bench.cores, env=python_env(source))
    bench.servers.append(server)
    path = RESPONSES[args.response]
    try:
        # With auth on the route the proxied path answers 401 to a bare GET: the health endpoint says ready.
        ready = "/_gatehouse/healthz" if name != "aiohttp" and args.features else path
        wait_ready(server, f"http://127.0.0.1:{port}{ready}", timeout=READY_SECONDS)
        headers = FEATURE_HEADERS if args.features else ()
        send(port, path, args.requests // 2, args.connections, headers)
        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True, timeout=120)
        counted = (args.requests // args.connections) * args.connections
        send(port, path, counted, args.connections, headers)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True, timeout=120)
        dump = Path(f"{out}.{server.pid}.1")
        deadline = time.monotonic() + 60
        while "summary:" not in (text := dump.read_text() if dump.exists() else ""):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no callgrind dump at {dump}")
            time.sleep(0.5)
    finally:
        stop(server, grace=30)
        bench.servers.remove(server)
    total = next(int(line.split()[1]) for line in text.splitlines() if line.startswith("summary:"))
    return total / counted


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        print(f"needs valgrind (apt-get install valgrind); missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    tools = nginx.ensure_tools()
    bench = Bench(args, tools, Cores.detect())
    try:
        upstream = bench.upstream()
        results = {"gatehouse": count(bench, "gatehouse", None, upstream, args)}
        if args.baseline:
            tree = baseline_tree(args.baseline, bench.workdir)
            results[f"gatehouse@{args.baseline}"] = count(bench, "baseline", tree, upstream, args)
        if args.reference:
            results["aiohttp"] = count(bench, "aiohttp", None, upstream, args)
    finally:
        bench.close()
    features = f", features {'+'.join(args.features)}" if args.features else ""
    print(f"{args.response} response, access_log {args.access_log}{features}, {args.requests} requests counted")
    for name, per_request in results.items():
        print(f"{name:<24} {per_request:>12,.0f} instructions per request")
    if args.baseline:
        ratio = results["gatehouse"] / results[f"gatehouse@{args.baseline}"]
        print(f"gatehouse / gatehouse@{args.baseline}: {ratio:.3f}x the instructions per request")
    if args.reference:
        print(f"gatehouse / aiohttp: {results['gatehouse'] / results['aiohttp']:.3f}x the instructions per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
