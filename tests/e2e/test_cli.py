"""The command line as the container runs it, tested as real processes on loopback ports.

``gatehouse serve`` and ``gatehouse check-config`` run as ``python -m app.cli``; the
Dockerfile's HEALTHCHECK command is read from the Dockerfile and run as it is
(only the port differs), and ``examples/run_demo.py`` is started and stopped
the way ``make run`` and a Ctrl-C would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0  # seconds for a server to answer: a sanity bound, generous for a loaded 2-core machine
STOP_TIMEOUT = 20.0  # seconds for a process to exit after SIGTERM
HEALTHZ = "/_gatehouse/healthz"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    """The environment minus any GATEHOUSE_* the developer has set, with the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def gatehouse(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


@contextmanager
def process(argv: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with its output in ``log``; stop and reap it if the test left it running.

    SIGTERM first, so a launcher such as run_demo still stops its own children.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


def wait_until_ok(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    pytest.fail(f"{url} not answering 200 after {START_TIMEOUT}s:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{proc.args} still running {STOP_TIMEOUT}s after SIGTERM:\n{log.read_text(errors='replace')}")


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gatehouse.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@contextmanager
def serve_demo(
    tmp_path: Path, upstream_port: int, settings: str = ""
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``gatehouse serve`` with ``settings`` (YAML) and a ``demo`` route (``/demo`` to the upstream, prefix
    kept); yields the process, its port and its log once it answers."""
    routes = f"routes:\n  - name: demo\n    prefix: /demo\n    upstream: http://127.0.0.1:{upstream_port}\n"
    config = write_config(tmp_path, textwrap.dedent(settings) + routes)
    port = free_port()
    log = tmp_path / "gatehouse.log"
    argv = gatehouse("serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port))
    with process(argv, log, cwd=tmp_path) as proc:
        wait_until_ok(f"http://127.0.0.1:{port}{HEALTHZ}", proc, log)
        yield proc, port, log


def check_config(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gatehouse("check-config", str(path)),
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def dockerfile_healthcheck() -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK instruction."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, "Dockerfile has no exec-form HEALTHCHECK ... CMD [...]"
    argv: list[str] = json.loads(match.group(1))
    return argv


def healthcheck_for_port(port: int) -> list[str]:
    argv = dockerfile_healthcheck()
    assert argv[0] == "python", argv
    assert any("http://127.0.0.1:8000/_gatehouse/healthz" in arg for arg in argv), argv
    return [sys.executable, *(arg.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for arg in argv[1:])]


def pids_with_parent(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process went away while we looked
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def upstream_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = tmp_path / "upstream.log"
    argv = [sys.executable, "-m", "examples.demo_upstream", "--host", "127.0.0.1", "--port", str(port)]
    with process(argv, log, cwd=ROOT) as proc:
        wait_until_ok(f"http://127.0.0.1:{port}/hello", proc, log)
        yield port


@pytest.fixture
def demo_config(tmp_path: Path, upstream_port: int) -> Path:
    return write_config(
        tmp_path,
        f"""\
        routes:
          - name: demo
            prefix: /demo
            upstream: http://127.0.0.1:{upstream_port}
            strip_prefix: true
        """,
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_proxies_a_route_and_exits_0_on_sigterm(tmp_path: Path, demo_config: Path, workers: str) -> None:
    port = free_port()
    log = tmp_path / "gatehouse.log"
    argv = gatehouse(
        "serve", "--config", str(demo_config), "--host", "127.0.0.1", "--port", str(port), "--workers", workers
    )
    with process(argv, log, cwd=tmp_path) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_until_ok(base + HEALTHZ, proc, log)
        with httpx.Client(base_url=base, trust_env=False, timeout=5.0) as client:
            hello = client.get("/demo/hello")
            assert hello.status_code == 200
            assert hello.json()["message"] == "Hello from the demo upstream"
            echo = client.get("/demo/echo", params={"q": "1"})
            assert echo.json()["path"] == "/echo"
            assert echo.json()["query"] == "q=1"
        assert stop(proc, log) == 0, log.read_text(errors="replace")


def test_dockerfile_healthcheck_passes_against_the_running_server(tmp_path: Path, demo_config: Path) -> None:
    port = free_port()
    log = tmp_path / "gatehouse.log"
    argv = gatehouse("serve", "--config", str(demo_config), "--host", "127.0.0.1", "--port", str(port))
    with process(argv, log, cwd=tmp_path) as proc:
        wait_until_ok(f"http://127.0.0.1:{port}{HEALTHZ}", proc, log)
        probe = subprocess.run(healthcheck_for_port(port), capture_output=True, text=True, timeout=30, check=False)
        assert probe.returncode == 0, probe.stderr
        assert stop(proc, log) == 0, log.read_text(errors="replace")


def test_dockerfile_healthcheck_fails_when_nothing_listens() -> None:
    probe = subprocess.run(healthcheck_for_port(free_port()), capture_output=True, timeout=30, check=False)
    assert probe.returncode != 0


def test_compose_healthcheck_is_the_dockerfile_one() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert compose["services"]["gatehouse"]["healthcheck"]["test"] == ["CMD", *dockerfile_healthcheck()]


def test_check_config_accepts_a_good_file_and_prints_the_routes(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        routes:
          - name: users
            prefix: /api/users
            upstream: http://127.0.0.1:9001/v1
          - name: catch-all
            prefix: /
            upstream: https://example.test
            methods: [GET]
        """,
    )
    result = check_config(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "users" in result.stdout
    assert "catch-all" in result.stdout


@pytest.mark.parametrize("name", ["gatehouse.yaml", "gatehouse.compose.yaml"])
def test_check_config_accepts_the_shipped_examples(tmp_path: Path, name: str) -> None:
    result = check_config(ROOT / "examples" / name, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo" in result.stdout


def test_check_config_rejects_a_non_http_upstream_naming_route_and_field(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        routes:
          - name: good
            prefix: /good
            upstream: http://127.0.0.1:9001
          - name: files
            prefix: /files
            upstream: ftp://x
        """,
    )
    result = check_config(config, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "files" in output
    assert "upstream" in output
    assert "Traceback" not in output


def test_check_config_rejects_duplicate_route_names(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        routes:
          - name: twin
            prefix: /a
            upstream: http://127.0.0.1:9001
          - name: twin
            prefix: /b
            upstream: http://127.0.0.1:9002
        """,
    )
    result = check_config(config, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "twin" in output
    assert "name" in output
    assert "Traceback" not in output


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the children through /proc")
def test_run_demo_serves_demo_hello_and_stops_both_children(tmp_path: Path) -> None:
    port, demo_port = free_port(), free_port()
    log = tmp_path / "run_demo.log"
    run_demo = ["-m", "examples.run_demo", "--host", "127.0.0.1", "--port", str(port), "--demo-port", str(demo_port)]
    argv = [sys.executable, *run_demo]
    children: list[int] = []
    try:
        with process(argv, log, cwd=ROOT) as proc:
            wait_until_ok(f"http://127.0.0.1:{port}/demo/hello", proc, log)
            children = pids_with_parent(proc.pid)  # the demo upstream and the gateway
            assert len(children) == 2, children
            with httpx.Client(trust_env=False, timeout=5.0) as client:
                hello = client.get(f"http://127.0.0.1:{port}/demo/hello")
            assert hello.json()["message"] == "Hello from the demo upstream"
            assert stop(proc, log) == 0, log.read_text(errors="replace")
        assert [pid for pid in children if is_running(pid)] == []
    finally:
        for pid in children:  # only if the assertions above failed
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)


def test_serve_under_hypercorn_speaks_h2c_and_drains_on_sigterm(tmp_path: Path, upstream_port: int) -> None:
    with serve_demo(tmp_path, upstream_port, "http_server: hypercorn\n") as (proc, port, log):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, http1=False, http2=True, trust_env=False, timeout=5.0) as client:
            hello = client.get("/demo/hello")
            assert hello.http_version == "HTTP/2" and hello.status_code == 200
        with httpx.Client(base_url=base, trust_env=False, timeout=10.0) as client:
            # SIGTERM while a request is in flight: it finishes, then the process exits 0.
            with client.stream("GET", "/demo/slow", params={"seconds": "1"}) as slow:
                time.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                slow.read()
            assert slow.status_code == 200
        assert proc.wait(timeout=STOP_TIMEOUT) == 0, log.read_text(errors="replace")
    assert "draining" in log.read_text(errors="replace")


def webhook_config(tmp_path: Path) -> Path:
    """One webhook endpoint, so ``serve`` opens (and migrates) the SQLite store in ``tmp_path``."""
    return write_config(
        tmp_path,
        f"""\
        routes: []
        webhook_store: sqlite:///{tmp_path / "hooks.db"}
        webhooks:
          - name: gh
            path: /hooks/gh
            verify: {{scheme: standard, secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}}
            deliver_to: [{{name: svc, url: "http://127.0.0.1:9/"}}]
        """,
    )


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gatehouse(*args), cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60, check=False
    )


def test_migrate_check_reports_an_empty_store_and_migrate_brings_it_to_the_newest_revision(tmp_path: Path) -> None:
    from app.webhooks.migrations import head_revision

    config = str(webhook_config(tmp_path))
    before = run_cli(tmp_path, "migrate", "--config", config, "--check")
    assert (before.returncode, before.stdout.strip()) == (
        1,
        f"webhook store is empty: start-up creates revision {head_revision()}",
    )
    assert not (tmp_path / "hooks.db").exists()  # --check changed nothing, not even by connecting
    migrated = run_cli(tmp_path, "migrate", "--config", config)
    assert (migrated.returncode, migrated.stdout.strip()) == (
        0,
        f"webhook store migrated from nothing to {head_revision()}",
    )
    after = run_cli(tmp_path, "migrate", "--config", config, "--check")
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"at revision {head_revision()}, the newest" in after.stdout


def test_serve_refuses_a_store_a_newer_gatehouse_migrated(tmp_path: Path) -> None:
    config = str(webhook_config(tmp_path))
    assert run_cli(tmp_path, "migrate", "--config", config).returncode == 0
    with sqlite3.connect(tmp_path / "hooks.db") as db:  # as if a later Gatehouse had added revision 0999
        db.execute("UPDATE webhook_alembic_version SET version_num = '0999'")
    check = run_cli(tmp_path, "migrate", "--config", config, "--check")
    assert check.returncode == 1
    assert "revision 0999, which this Gatehouse does not know" in check.stderr
    log = tmp_path / "serve.log"
    with process(gatehouse("serve", "--config", config, "--port", str(free_port())), log, cwd=tmp_path) as proc:
        assert proc.wait(timeout=START_TIMEOUT) != 0
    output = log.read_text(errors="replace")
    assert "SchemaTooNew: webhook store schema is at revision 0999" in output
    assert "a newer Gatehouse migrated it" in output
