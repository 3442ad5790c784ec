"""Tools the benchmark needs (wrk, nginx) and the two nginx configurations it runs.

The upstream serves static files with sendfile, so it is never the bottleneck;
the reverse proxy is a plain production-style ``proxy_pass`` with a keep-alive pool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SMALL_PATH = "/small.json"
LARGE_PATH = "/1mib.bin"
HUGE_PATH = "/1gib.bin"
SMALL_BODY = b'{"id":4711,"name":"gatehouse-bench","status":"ok","tags":["alpha","beta","gamma"],"score":0.97}\n'
LARGE_SIZE = 1 << 20
HUGE_SIZE = 1 << 30


class MissingTool(RuntimeError):
    pass


def find_tool(name: str) -> str | None:
    # Debian puts nginx in /usr/sbin, which is not on a normal user's PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def ensure_tools() -> dict[str, str]:
    """Return paths to wrk and nginx, installing them with apt-get only if one is missing."""
    missing = [tool for tool in ("wrk", "nginx") if find_tool(tool) is None]
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise MissingTool(f"{', '.join(missing)} not found; install them (e.g. apt-get install wrk nginx)")
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk", "nginx"], check=True, env=env, timeout=900)
    paths = {tool: find_tool(tool) for tool in ("wrk", "nginx")}
    if None in paths.values():
        raise MissingTool(f"still missing after install: {paths}")
    return {tool: str(path) for tool, path in paths.items()}


def write_files(www: Path) -> None:
    www.mkdir(parents=True, exist_ok=True)
    (www / SMALL_PATH.lstrip("/")).write_bytes(SMALL_BODY)
    (www / LARGE_PATH.lstrip("/")).write_bytes(bytes(range(256)) * (LARGE_SIZE // 256))
    with (www / HUGE_PATH.lstrip("/")).open("wb") as huge:
        huge.truncate(HUGE_SIZE)  # sparse: costs no disk


def main_block(prefix: Path, name: str, http_body: str) -> str:
    # `user root;` lets the workers read the 0700 temp dir; it only applies when started as root.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = []
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / f"{name}-temp" / kind).mkdir(parents=True, exist_ok=True)  # nginx makes only the leaf
        temps.append(f"    {kind}_temp_path {prefix}/{name}-temp/{kind};")
    temp = "\n".join(temps)
    return f"""{user}worker_processes 1;
pid {prefix}/{name}.pid;
error_log {prefix}/{name}-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
{temp}
{http_body}
}}
"""


def upstream_config(prefix: Path, port: int, www: Path) -> Path:
    body = f"""    default_type application/octet-stream;
    types {{ application/json json; }}
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
    }}"""
    path = prefix / "upstream.conf"
    path.write_text(main_block(prefix, "upstream", body))
    return path


def reverse_proxy_config(prefix: Path, port: int, upstream_port: int, keepalive: int) -> Path:
    # Buffers sized for 1 MiB bodies and no temp files: with the defaults (8 x 4 KiB, spill to disk)
    # nginx moved half as many 1 MiB responses per second on the benchmark machine.
    body = f"""    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive {keepalive};
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
        }}
    }}"""
    path = prefix / "reverse-proxy.conf"
    path.write_text(main_block(prefix, "reverse-proxy", body))
    return path


def nginx_command(nginx: str, prefix: Path, config: Path, name: str) -> list[str]:
    # -e: the error log used before the config is read (default /var/log/nginx may not be writable).
    return [nginx, "-p", str(prefix), "-c", str(config), "-e", f"{prefix}/{name}-error.log", "-g", "daemon off;"]


def version(tool: str) -> str:
    try:
        result = subprocess.run([tool, "-v"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    text = (result.stdout + result.stderr).strip().splitlines()
    return text[0] if text else "unknown"
