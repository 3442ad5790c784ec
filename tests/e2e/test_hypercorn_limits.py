"""``gatehouse serve`` under ``http_server: hypercorn`` as a real process: the ``server:`` block and the drain apply.

The same settings as under uvicorn (tests/integration/test_slow_clients.py runs them
in-process under both servers): a connection over ``max_connections`` gets 503, a
client trickling its header block gets 408, and ``drain_delay`` keeps the listener
serving (``/readyz`` 503) before the shutdown, which then closes connections still
waiting for a header block at once, not when ``header_timeout`` runs out.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import (
    STOP_TIMEOUT,
    serve_demo,
    upstream_port,  # noqa: F401 # a fixture
)
from tests.servers import parse_response

pytestmark = pytest.mark.slow

READYZ = "/_gatehouse/readyz"


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: gatehouse.test\r\n\r\n".encode()


def read_answer(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (or 5 s)."""
    sock.settimeout(5)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def read_one(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    return head


def held_connection(port: int) -> socket.socket:
    """A keep-alive connection that got a 200 (the health check's connection may take a moment to be seen closed)."""
    deadline = time.monotonic() + 5
    while True:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(get("/demo/hello"))
        if read_one(sock).startswith(b"HTTP/1.1 200 "):
            return sock
        sock.close()
        assert time.monotonic() < deadline, "no connection slot came free"
        time.sleep(0.05)


def test_server_limits_and_drain_delay_apply_under_hypercorn(tmp_path: Path, upstream_port: int) -> None:  # noqa: F811
    settings = """\
        http_server: hypercorn
        drain_delay: 1.5
        server:
          header_timeout: 1
          keepalive_timeout: 30
          max_connections: 2
        """
    with serve_demo(tmp_path, upstream_port, settings) as (proc, port, log):
        base = f"http://127.0.0.1:{port}"

        held = [held_connection(port) for _ in range(2)]  # two keep-alive connections, answered and kept open
        with socket.create_connection(("127.0.0.1", port)) as third:
            third.sendall(get("/demo/hello"))
            refused = parse_response(read_answer(third))
        assert refused.status == 503
        assert refused.header_values(b"connection") == [b"close"]
        assert json.loads(refused.body)["type"] == "urn:gatehouse:problem:too-many-connections"
        for sock in held:
            sock.close()

        deadline = time.monotonic() + 5
        while True:  # the held connections' slots are free again
            with socket.create_connection(("127.0.0.1", port)) as slow:
                slow.sendall(b"GET /demo/hello HTTP/1.1\r\n")
                started = time.monotonic()
                slow.settimeout(0.3)
                answer = b""
                for i in range(20):  # one header line every 0.3 s: never done
                    try:
                        slow.sendall(b"X-Trickle-%d: 1\r\n" % i)
                        answer += slow.recv(65536)
                        break
                    except TimeoutError:
                        continue
                    except ConnectionError:
                        break
                answer += read_answer(slow)
                waited = time.monotonic() - started
            if not answer.startswith(b"HTTP/1.1 503 ") or time.monotonic() > deadline:
                break
        response = parse_response(answer)
        assert response.status == 408
        assert json.loads(response.body)["type"] == "urn:gatehouse:problem:request-timeout"
        assert 0.9 <= waited < 4

        with httpx.Client(base_url=base, trust_env=False, timeout=5.0) as client:
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert client.get(READYZ, headers={"connection": "close"}).status_code == 503
            assert client.get("/demo/hello", headers={"connection": "close"}).status_code == 200  # still served
        assert proc.wait(timeout=STOP_TIMEOUT) == 0, log.read_text(errors="replace")


def closed_after(socks: list[socket.socket], since: float, limit: float) -> list[tuple[bytes, float | None]]:
    """What each of ``socks`` received until the server closed it, and when (s after ``since``; None: still open)."""
    outcome: dict[socket.socket, tuple[bytes, float | None]] = {sock: (b"", None) for sock in socks}
    open_ = list(socks)
    while open_ and (left := since + limit - time.monotonic()) > 0:
        readable, _, _ = select.select(open_, [], [], left)
        for sock in readable:
            received, _ = outcome[sock]
            try:
                chunk = sock.recv(65536)
            except ConnectionError:
                chunk = b""
            if chunk:
                outcome[sock] = (received + chunk, None)
            else:
                outcome[sock] = (received, time.monotonic() - since)
                open_.remove(sock)
    return [outcome[sock] for sock in socks]


def test_sigterm_closes_connections_waiting_for_a_header_block_after_the_drain_delay(
    tmp_path: Path,
    upstream_port: int,  # noqa: F811
) -> None:
    # header_timeout and shutdown_grace far longer than the bound below: only the shutdown may close them.
    settings = """\
        http_server: hypercorn
        drain_delay: 1
        shutdown_grace: 60
        server:
          header_timeout: 30
        """
    with serve_demo(tmp_path, upstream_port, settings) as (proc, port, log):
        with (
            socket.create_connection(("127.0.0.1", port)) as silent,
            socket.create_connection(("127.0.0.1", port)) as partial,
        ):
            partial.sendall(b"GET /demo/hello HTTP/1.1\r\n")  # a request line, no header block yet
            time.sleep(0.3)  # both accepted, their header clocks running
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            (silent_answer, silent_closed), (partial_answer, partial_closed) = closed_after(
                [silent, partial], signalled, 10
            )
            try:  # while the clients still hold their ends open
                code: int | None = proc.wait(timeout=max(0.1, signalled + 10 - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
            exited = time.monotonic() - signalled
    assert code == 0, f"exit {code} {exited:.1f} s after SIGTERM:\n{log.read_text(errors='replace')}"
    # Closed without an answer, as uvicorn does; not before the drain delay is over (the listener still serves).
    assert (silent_answer, partial_answer) == (b"", b"")
    assert silent_closed is not None and 0.9 <= silent_closed < 10
    assert partial_closed is not None and 0.9 <= partial_closed < 10
