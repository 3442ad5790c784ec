"""Child processes for the benchmark: start pinned, wait until they answer, always stop.

Every process is started in its own session, so stopping one signals exactly the
group we created (nginx's master and its workers, uvicorn and anything it forks).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cores:
    """Where the servers run and where the load generator runs (None: unpinned)."""

    server: int | None
    client: int | None

    @classmethod
    def detect(cls) -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2 and shutil.which("taskset"):
            return cls(server=cpus[0], client=cpus[1])
        return cls(server=None, client=None)

    def wrap(self, command: Sequence[str], core: int | None) -> list[str]:
        return ["taskset", "-c", str(core), *command] if core is not None else list(command)


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    ready_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ServerFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python_env(source: Path | None = None) -> dict[str, str]:
    """The environment for Python children: the repo (or ``source``) importable, no stray GATEHOUSE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    root = str(source or REPO_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start(
    name: str, command: Sequence[str], *, workdir: Path, cores: Cores, env: dict[str, str] | None = None
) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            cores.wrap(command, cores.server),
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name=name, process=process, log=log)


def wait_ready(server: Server, url: str, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise ServerFailed(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
            try:
                response = client.get(url)
                if response.status_code == 200:
                    server.ready_url = url
                    return
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
    raise ServerFailed(f"{server.name} not ready at {url} after {timeout:.0f}s ({last}):\n{server.log_tail()}")


def stop(server: Server, grace: float = 5.0) -> None:
    """SIGTERM the process group we created, SIGKILL it after ``grace`` seconds."""
    process = server.process
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(grace)
    # Workers may outlive a master that exited on its own; the group id is still ours.
    _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (via /proc/<pid>/task/*/children)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) from /proc/<pid>/status, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def rss_mib(pids: Sequence[int]) -> float:
    """Resident memory of ``pids`` together, in MiB (0 for processes that are gone)."""
    total = 0
    for pid in pids:
        try:
            total += memory_kib(pid).get("VmRSS", 0)
        except OSError:
            continue
    return round(total / 1024, 1)


def python_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
