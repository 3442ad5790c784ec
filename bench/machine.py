"""What the figures were measured on: CPU, kernel, versions, the commit, the load."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import nginx
from bench.procs import REPO_ROOT, Cores

# anyio >= 4.11 no longer installs sniffio, and httpcore 1.0.x then retries a failing
# `import sniffio` on every pool operation (encode/httpcore#1103): ~25% of its req/s here.
SNIFFIO = importlib.util.find_spec("sniffio") is not None
SNIFFIO_NOTE = "note: sniffio is not installed, which slows httpcore-based fastapi-proxy-lib (httpcore#1103)"
_GIT: dict[str, Any] = {"cwd": REPO_ROOT, "capture_output": True, "text": True, "timeout": 10}


def machine_info(tools: dict[str, str], cores: Cores) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = models[0] if models else platform.processor()
    packages = "gatehouse fastapi starlette uvicorn uvloop httptools httpx httpcore aiohttp fastapi-proxy-lib"
    versions = {}
    for package in packages.split():
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        "python": platform.python_version(),
        "sniffio": SNIFFIO,
        "git": git_state(),
        "nginx": nginx.version(tools["nginx"]),
        "wrk": nginx.version(tools["wrk"]),
        "server_core": cores.server,
        "client_core": cores.client,
        "packages": versions,
    }


def git_state() -> str:
    """The commit measured, with "+dirty" when app/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **_GIT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "app"], **_GIT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")
