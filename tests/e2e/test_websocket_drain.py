"""SIGTERM to a Gatehouse process with an open WebSocket: it keeps working for shutdown_grace, then gets 1001."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.test_cli import ROOT, STOP_TIMEOUT, free_port, gatehouse, process, wait_until_ok, write_config

pytestmark = pytest.mark.slow

GRACE = 3.0


def wait_listening(port: int, proc, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(log.read_text(errors="replace"))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listening on {port}:\n{log.read_text(errors='replace')}")


def test_sigterm_gives_open_websockets_the_grace_then_closes_them_with_1001(tmp_path):
    upstream_port, port = free_port(), free_port()
    upstream_log, log = tmp_path / "upstream.log", tmp_path / "gatehouse.log"
    config = write_config(
        tmp_path,
        f"""\
        shutdown_grace: {GRACE}
        routes:
          - name: live
            prefix: /live
            upstream: http://127.0.0.1:{upstream_port}
        """,
    )
    upstream_argv = [sys.executable, "-m", "tests.websocket_upstream", str(upstream_port)]
    argv = gatehouse("serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port))
    with process(upstream_argv, upstream_log, cwd=ROOT) as upstream, process(argv, log, cwd=tmp_path) as proc:
        wait_listening(upstream_port, upstream, upstream_log)
        wait_until_ok(f"http://127.0.0.1:{port}/_gatehouse/readyz", proc, log)
        with connect(f"ws://127.0.0.1:{port}/live/", open_timeout=5) as ws:
            ws.send("before")
            assert ws.recv(timeout=5) == "before"
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(1.0)
            ws.send("during the grace")  # still relayed
            assert ws.recv(timeout=5) == "during the grace"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=GRACE + 5)
            waited = time.monotonic() - signalled
        assert proc.wait(timeout=STOP_TIMEOUT) == 0, log.read_text(errors="replace")
    assert closed.value.rcvd is not None, closed.value
    assert closed.value.rcvd.code == 1001
    assert closed.value.rcvd.reason == "the gateway is shutting down"
    assert GRACE - 1.5 < waited < GRACE + 1, waited
    assert "Cancel" not in log.read_text(errors="replace")  # closed in time, nothing was cut off
