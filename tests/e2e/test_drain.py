"""SIGTERM to a running Gatehouse process: in-flight downloads finish, then it exits 0."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import ROOT, STOP_TIMEOUT, free_port, gatehouse, process, wait_until_ok, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def slow_upstream(tmp_path: Path):
    port = free_port()
    argv = [sys.executable, "-m", "tests.upstream_process", "--port", str(port)]
    with process(argv, tmp_path / "upstream.log", cwd=ROOT) as proc:
        wait_until_ok(f"http://127.0.0.1:{port}/health", proc, tmp_path / "upstream.log")
        yield f"http://127.0.0.1:{port}"


def serve(tmp_path: Path, upstream: str, grace: float):
    config = write_config(
        tmp_path,
        f"""\
        shutdown_grace: {grace}
        routes:
          - name: files
            prefix: /files
            upstream: {upstream}
        """,
    )
    port = free_port()
    return port, gatehouse("serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port))


def download_in_background(url: str, first_chunk: threading.Event, outcome: dict):
    def run():
        try:
            with httpx.Client(trust_env=False, timeout=10) as client, client.stream("GET", url) as response:
                lines = []
                for line in response.iter_lines():
                    lines.append(line)
                    first_chunk.set()
                outcome["lines"] = lines
        except httpx.HTTPError as exc:
            outcome["error"] = exc
        finally:
            first_chunk.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigterm_during_a_slow_download_lets_it_finish_then_exits_0(tmp_path, slow_upstream):
    port, argv = serve(tmp_path, slow_upstream, grace=10)
    log = tmp_path / "gatehouse.log"
    with process(argv, log, cwd=tmp_path) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_until_ok(f"{base}/_gatehouse/readyz", proc, log)
        first_chunk, outcome = threading.Event(), {}
        thread = download_in_background(f"{base}/files/stream?chunks=20&delay=0.1", first_chunk, outcome)
        assert first_chunk.wait(10)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(f"{base}/_gatehouse/healthz", timeout=1)
        thread.join(STOP_TIMEOUT)
        assert proc.wait(timeout=STOP_TIMEOUT) == 0, log.read_text(errors="replace")
    assert "error" not in outcome, outcome
    assert outcome["lines"] == [f"chunk {i}" for i in range(20)]
    text = log.read_text(errors="replace")
    assert "draining (signal SIGTERM)" in text
    assert "upstream clients closed" in text


def test_sigterm_cuts_a_download_longer_than_shutdown_grace_and_still_exits_0(tmp_path, slow_upstream):
    port, argv = serve(tmp_path, slow_upstream, grace=1)
    log = tmp_path / "gatehouse.log"
    with process(argv, log, cwd=tmp_path) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_until_ok(f"{base}/_gatehouse/readyz", proc, log)
        first_chunk, outcome = threading.Event(), {}
        thread = download_in_background(f"{base}/files/stream?chunks=100&delay=0.1", first_chunk, outcome)
        assert first_chunk.wait(10)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT) == 0, log.read_text(errors="replace")
        stopped_after = time.monotonic() - started
        thread.join(STOP_TIMEOUT)
    assert 0.9 <= stopped_after < 5
    assert "error" in outcome  # cut short after the grace period, not waited for
