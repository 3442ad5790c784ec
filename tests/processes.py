"""The test upstream in its own process, so a test can SIGKILL it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0  # a sanity bound: imports alone take 10 s on a loaded 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class UpstreamProcess:
    url: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL: no FIN from a graceful close, no chance to finish a response."""
        self.process.kill()


@contextlib.asynccontextmanager
async def upstream_process() -> AsyncIterator[UpstreamProcess]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")} | {"PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "tests.upstream_process", "--port", str(port)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
            with anyio.fail_after(START_TIMEOUT):
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"test upstream exited with {proc.returncode}")
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get(f"{url}/health")).status_code == 200:
                            break
                    await anyio.sleep(0.05)
        yield UpstreamProcess(url, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
