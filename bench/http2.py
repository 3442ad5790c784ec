"""HTTP/2 small-response requests/s through Gatehouse (hypercorn) beside nginx, by h2load, in one run.

Both proxies terminate TLS with the same throwaway certificate (ALPN h2) and
forward over HTTP/1.1 keep-alive to the same static nginx upstream; h2load
(Debian's nghttp2-client) drives each with the same connections and streams.
Rounds interleave the targets, so a noisy minute costs both alike; the report
gives each target's median round and Gatehouse's share of nginx's rate.

    python -m bench.http2 [--duration 10] [--connections 8] [--streams 16] [--repeat 3] [--cleartext]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trustme
import yaml

from bench import nginx
from bench.procs import Cores, Server, ServerFailed, free_port, python_command, python_env, start, stop

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.http2", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per h2load run (default 10)")
    parser.add_argument("--connections", type=int, default=8, help="h2load connections (default 8)")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams per connection (default 16)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--cleartext", action="store_true", help="h2c with prior knowledge instead of TLS")
    return parser.parse_args(argv)


def write_certificate(workdir: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_pem = workdir / "cert.pem", workdir / "key.pem", workdir / "ca.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(ca_pem))
    return cert, key, ca_pem


def nginx_h2_config(prefix: Path, port: int, upstream_port: int, tls: tuple[Path, Path] | None) -> Path:
    listen = f"listen 127.0.0.1:{port} {'ssl ' if tls else ''}http2 backlog=4096;"
    certificates = f"ssl_certificate {tls[0]};\n        ssl_certificate_key {tls[1]};" if tls else ""
    body = f"""    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        {listen}
        {certificates}
        http2_max_concurrent_streams 128;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    path = prefix / "h2-proxy.conf"
    path.write_text(nginx.main_block(prefix, "h2-proxy", body))
    return path


def wait_ready(server: Server, url: str, verify: ssl.SSLContext | bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=verify, http1=False, http2=True, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise ServerFailed(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise ServerFailed(f"{server.name} not ready at {url}:\n{server.log_tail()}")


def h2load(tool: str, url: str, args: argparse.Namespace, cores: Cores) -> dict[str, Any]:
    command = [tool, "-D", str(args.duration), "-c", str(args.connections), "-m", str(args.streams), url]
    result = subprocess.run(
        cores.wrap(command, cores.client), capture_output=True, text=True, timeout=args.duration + 60, check=False
    )
    out = result.stdout
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    protocol = re.search(r"Application protocol: (\S+)", out)
    return {
        "req_per_s": float(rate.group(1)) if rate else 0.0,
        "succeeded": int(counts.group(3)) if counts else 0,
        "failed": int(counts.group(4)) if counts else -1,
        "protocol": protocol.group(1) if protocol else "?",
        "raw": out + result.stderr,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tools = nginx.ensure_tools()
    h2load_tool = shutil.which("h2load")
    if h2load_tool is None:
        print("h2load not found: apt-get install nghttp2-client (scripts/test-services installs it)")
        return 1
    cores = Cores.detect()
    scheme = "http" if args.cleartext else "https"
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-h2-") as tmp:
        workdir = Path(tmp)
        cert, key, ca_pem = write_certificate(workdir)
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_pem))
        www = workdir / "www"
        nginx.write_files(www)
        servers: list[Server] = []
        try:
            upstream_port = free_port()
            up_prefix = workdir / "upstream"
            up_prefix.mkdir()
            config = nginx.upstream_config(up_prefix, upstream_port, www)
            upstream = start(
                "upstream",
                nginx.nginx_command(tools["nginx"], up_prefix, config, "upstream"),
                workdir=workdir,
                cores=cores,
            )
            servers.append(upstream)

            gh_port = free_port()
            settings: dict[str, Any] = {
                "http_server": "hypercorn",
                "routes": [{"name": "bench", "prefix": "/", "upstream": f"http://127.0.0.1:{upstream_port}"}],
            }
            if not args.cleartext:
                settings["tls"] = {"cert_file": str(cert), "key_file": str(key)}
            gh_config = workdir / "gatehouse.yaml"
            gh_config.write_text(yaml.safe_dump(settings))
            gh_command = python_command("app.cli", "serve", "--config", str(gh_config), "--port", str(gh_port))
            gatehouse = start("gatehouse", gh_command, workdir=workdir, cores=cores, env=python_env())
            servers.append(gatehouse)

            ng_port = free_port()
            ng_prefix = workdir / "h2-proxy"
            ng_prefix.mkdir()
            ng_config = nginx_h2_config(ng_prefix, ng_port, upstream_port, None if args.cleartext else (cert, key))
            proxy = start(
                "nginx",
                nginx.nginx_command(tools["nginx"], ng_prefix, ng_config, "h2-proxy"),
                workdir=workdir,
                cores=cores,
            )
            servers.append(proxy)

            urls = {
                "gatehouse": f"{scheme}://127.0.0.1:{gh_port}{nginx.SMALL_PATH}",
                "nginx": f"{scheme}://127.0.0.1:{ng_port}{nginx.SMALL_PATH}",
            }
            wait_ready(gatehouse, urls["gatehouse"], verify)
            wait_ready(proxy, urls["nginx"], verify)
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
            print(f"h2load -D {args.duration} -c {args.connections} -m {args.streams} ({scheme}, small.json)")
            for round_number in range(1, args.repeat + 1):
                for name, url in urls.items():
                    row = h2load(h2load_tool, url, args, cores)
                    rows[name].append(row)
                    print(
                        f"  round {round_number} {name:<10} {row['req_per_s']:>10.0f} req/s  "
                        f"{row['succeeded']} ok, {row['failed']} failed, {row['protocol']}",
                        flush=True,
                    )
        finally:
            for server in reversed(servers):
                stop(server)
    medians = {name: statistics.median(r["req_per_s"] for r in runs) for name, runs in rows.items()}
    ratio = medians["gatehouse"] / medians["nginx"] if medians["nginx"] else 0.0
    print(
        f"median req/s: gatehouse {medians['gatehouse']:.0f}, nginx {medians['nginx']:.0f}; "
        f"gatehouse / nginx = {ratio:.3f}"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"http2-{stamp}.json").write_text(
        json.dumps({"args": vars(args), "medians": medians, "ratio": ratio, "rounds": rows}, indent=2)
    )
    failed = any(r["failed"] != 0 or r["protocol"] not in ("h2", "h2c") for runs in rows.values() for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
