"""``app.main:app`` under servers Gatehouse does not start itself: ``python -m uvicorn`` with its
defaults, and gunicorn with uvicorn's worker. A spoofed X-Forwarded-For from 127.0.0.1 (which
uvicorn trusts by default) is not the client address, and SIGTERM drains: /readyz answers 503
on the ops listener, the download in flight finishes, the process exits 0."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import ROOT, STOP_TIMEOUT, child_env, free_port, write_config
from tests.e2e.test_drain import download_in_background, slow_upstream  # noqa: F401 # a fixture

pytestmark = pytest.mark.slow

START_TIMEOUT = 60.0  # a cold interpreter importing the app on a busy 2-core host


@contextlib.contextmanager
def server(argv: list[str], config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = child_env() | {"GATEHOUSE_CONFIG": str(config)}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {START_TIMEOUT}s:\n{log.read_text(errors='replace')}")


def spoof_then_drain(tmp_path: Path, upstream: str, argv_for) -> None:
    port, ops_port = free_port(), free_port()
    config = write_config(
        tmp_path,
        f"""\
        shutdown_grace: 10
        ops_listen: 127.0.0.1:{ops_port}
        routes:
          - name: files
            prefix: /files
            upstream: {upstream}
            rate_limit: {{limit: 1/minute, key: ip}}
          - name: open
            prefix: /open
            upstream: {upstream}
        """,
    )
    base, ops = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}"
    log = tmp_path / "server.log"
    with server(argv_for(port), config, log) as proc:
        wait_ready(f"{ops}/_gatehouse/readyz", proc, log)
        with httpx.Client(trust_env=False, timeout=5) as client:
            first = client.get(f"{base}/files/echo/1", headers={"x-forwarded-for": "6.6.6.6"})
            second = client.get(f"{base}/files/echo/2", headers={"x-forwarded-for": "7.7.7.7"})
        assert first.status_code == 200, first.text
        sent = dict(first.json()["headers"])
        assert (sent["x-forwarded-for"], sent["x-real-ip"]) == ("127.0.0.1", "127.0.0.1")
        assert second.status_code == 429  # one budget: both came from 127.0.0.1, whatever they claimed

        first_chunk, outcome = threading.Event(), {}
        thread = download_in_background(f"{base}/open/stream?chunks=25&delay=0.1", first_chunk, outcome)
        assert first_chunk.wait(10)
        proc.send_signal(signal.SIGTERM)
        with httpx.Client(trust_env=False, timeout=2) as client:
            deadline, ready = time.monotonic() + 2, None
            while time.monotonic() < deadline and ready != 503:
                ready = client.get(f"{ops}/_gatehouse/readyz").status_code
                time.sleep(0.05)
        thread.join(STOP_TIMEOUT)
        assert proc.wait(timeout=STOP_TIMEOUT) == 0, log.read_text(errors="replace")
    assert ready == 503  # draining, while the download was still going
    assert "error" not in outcome, outcome
    assert outcome["lines"] == [f"chunk {i}" for i in range(25)]


def test_plain_uvicorn_ignores_a_spoofed_forwarded_for_and_drains_on_sigterm(tmp_path, slow_upstream):  # noqa: F811
    spoof_then_drain(
        tmp_path,
        slow_upstream,
        lambda port: [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
    )


def test_gunicorn_with_uvicorn_workers_ignores_a_spoofed_forwarded_for_and_drains(tmp_path, slow_upstream):  # noqa: F811
    gunicorn = [sys.executable, "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "1"]
    spoof_then_drain(tmp_path, slow_upstream, lambda port: [*gunicorn, "-b", f"127.0.0.1:{port}", "app.main:app"])
