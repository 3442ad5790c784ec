"""The systems under test: how to start each one in front of a given upstream URL.

Each launcher returns the command to run; ``bench.proxy`` starts it pinned to the
server core, waits for it to answer through the proxy, and stops it afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import nginx
from bench.procs import REPO_ROOT, python_command

GATEHOUSE_CLI = REPO_ROOT / "app" / "cli.py"


@dataclass(frozen=True)
class Launch:
    command: list[str]
    python: bool  # needs the repo on PYTHONPATH and a scrubbed environment
    source: Path | None = None  # import `app` from this tree instead of the repo (--baseline)
    env: dict[str, str] | None = None  # added to the (scrubbed) environment


# (workdir, port, upstream URL, tool paths) -> Launch
Launcher = Callable[[Path, int, str, dict[str, str]], Launch]


def gatehouse(
    workdir: Path,
    port: int,
    upstream: str,
    _tools: dict[str, str],
    transport: str = "aiohttp",
    settings: dict[str, Any] | None = None,
    workers: int = 1,
) -> Launch:
    """``gatehouse serve`` with one route ``/`` to ``upstream``; ``settings`` are added to (or replace) the file's."""
    config = workdir / f"gatehouse-{port}.yaml"
    document: dict[str, Any] = {
        "upstream_transport": transport,
        "routes": [{"name": "bench", "prefix": "/", "upstream": upstream}],
    }
    document.update(settings or {})
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return Launch(python_command("app.cli", *args), python=True)


def gatehouse_from(tree: Path) -> Launcher:
    """Gatehouse as ``tree`` has it (an older commit's ``app/``, for before/after runs)."""

    def launch(workdir: Path, port: int, upstream: str, tools: dict[str, str]) -> Launch:
        command = gatehouse(workdir, port, upstream, tools).command
        return Launch(command, python=True, source=tree)

    return launch


def gatehouse_nolog(workdir: Path, port: int, upstream: str, tools: dict[str, str]) -> Launch:
    """Gatehouse with ``access_log: off``: what the access log costs."""
    return gatehouse(workdir, port, upstream, tools, settings={"access_log": "off"})


def gatehouse_httpcore(workdir: Path, port: int, upstream: str, tools: dict[str, str]) -> Launch:
    """Gatehouse on httpx's own HTTP/1.1 transport: the figure behind the aiohttp choice."""
    return gatehouse(workdir, port, upstream, tools, transport="httpcore")


def gatehouse_trim(workdir: Path, port: int, upstream: str, tools: dict[str, str]) -> Launch:
    """Gatehouse with glibc's heap trimmed above 128 KiB free (``GLIBC_TUNABLES``): what that costs in CPU."""
    launch = gatehouse(workdir, port, upstream, tools)
    return Launch(launch.command, launch.python, env={"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"})


def nginx_proxy(workdir: Path, port: int, upstream: str, tools: dict[str, str]) -> Launch:
    upstream_port = int(upstream.rsplit(":", 1)[1])
    name = f"reverse-proxy-{port}"
    prefix = workdir / name
    prefix.mkdir()
    config = nginx.reverse_proxy_config(prefix, port, upstream_port, keepalive=64)
    return Launch(nginx.nginx_command(tools["nginx"], prefix, config, "reverse-proxy"), python=False)


def fastapi_proxy_lib(_workdir: Path, port: int, upstream: str, _tools: dict[str, str]) -> Launch:
    args = ["--port", str(port), "--upstream", upstream]
    return Launch(python_command("bench.ref_fastapi_proxy_lib", *args), python=True)


def aiohttp_proxy(_workdir: Path, port: int, upstream: str, _tools: dict[str, str]) -> Launch:
    args = ["--port", str(port), "--upstream", upstream]
    return Launch(python_command("bench.ref_aiohttp_proxy", *args), python=True)


# "direct" has no launcher: wrk talks to the upstream itself.
LAUNCHERS: dict[str, Launcher] = {
    "gatehouse": gatehouse,
    "gatehouse-nolog": gatehouse_nolog,
    "gatehouse-httpcore": gatehouse_httpcore,
    "gatehouse-trim": gatehouse_trim,
    "nginx": nginx_proxy,
    "fastapi-proxy-lib": fastapi_proxy_lib,
    "aiohttp": aiohttp_proxy,
}
TARGETS = ("direct", *LAUNCHERS)
# Run only when named in --only.
ON_REQUEST = frozenset({"gatehouse-trim"})


def unavailable(target: str) -> str | None:
    """Why ``target`` cannot run here, or None."""
    if target.startswith("gatehouse") and not GATEHOUSE_CLI.is_file():
        return f"{GATEHOUSE_CLI.relative_to(REPO_ROOT)} does not exist yet"
    return None
