"""Run the demo: the demo upstream plus Gatehouse in front of it (what ``make run`` does).

    python -m examples.run_demo --host 127.0.0.1 --port 8000 --demo-port 8001

Both run as child processes of this one, each in its own session, so a Ctrl-C
in the terminal reaches them once, through here: SIGINT and SIGTERM are
forwarded as SIGTERM (graceful shutdown), and whatever is still alive after
the grace period is killed. If either child dies, the other is stopped too.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "gatehouse.yaml"
DEFAULT_DEMO_PORT = 8001
START_TIMEOUT = 20.0  # seconds for each child to start answering
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL


def _local(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def demo_config(demo_port: int, directory: Path) -> Path:
    """The example config, re-pointed at ``demo_port`` when it is not the default."""
    if demo_port == DEFAULT_DEMO_PORT:
        return CONFIG
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    for route in data["routes"]:
        if route["name"] == "demo":
            route["upstream"] = f"http://127.0.0.1:{demo_port}"
    path = directory / "gatehouse.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    # A session of its own: the terminal's Ctrl-C goes to us only, and we forward it once
    # (uvicorn treats a second SIGINT as "exit now, skip the graceful shutdown").
    return subprocess.Popen(argv, cwd=ROOT, start_new_session=True)


def _wait_for_port(host: str, port: int, child: subprocess.Popen[bytes], stop: threading.Event) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and child.poll() is None and not stop.is_set():
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            stop.wait(0.1)
    return False


def _wait_for_health(url: str, child: subprocess.Popen[bytes], stop: threading.Event) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and child.poll() is None and not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        stop.wait(0.1)
    return False


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every live child (the gateway first, so it drains), then kill stragglers."""
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for child in reversed(children):
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run(host: str, port: int, demo_port: int) -> int:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)

    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="gatehouse-demo-") as tmp:
        try:
            demo_argv = ["-m", "examples.demo_upstream", "--host", "127.0.0.1", "--port", str(demo_port)]
            demo = _start([sys.executable, *demo_argv])
            children.append(demo)
            if not _wait_for_port("127.0.0.1", demo_port, demo, stop):
                print(f"run_demo: the demo upstream did not start on port {demo_port}", file=sys.stderr)
                return 0 if stop.is_set() else 1

            config = demo_config(demo_port, Path(tmp))
            serve = ["serve", "--config", str(config), "--host", host, "--port", str(port)]
            gateway = _start([sys.executable, "-m", "app.cli", *serve])
            children.append(gateway)
            base = f"http://{_url_host(_local(host))}:{port}"
            if not _wait_for_health(f"{base}/_gatehouse/healthz", gateway, stop):
                print(f"run_demo: Gatehouse did not become healthy on port {port}", file=sys.stderr)
                return 0 if stop.is_set() else 1
            print(f"\nGatehouse is up. Try:  curl {base}/demo/hello   (Ctrl-C to stop)\n", flush=True)

            while not stop.wait(0.2):
                for child in children:
                    if child.poll() is not None:
                        print(f"run_demo: {child.args[2]} exited with {child.returncode}", file=sys.stderr)
                        return child.returncode or 1
            return 0
        finally:
            _stop(children)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.run_demo", description="Run Gatehouse with the demo upstream."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address Gatehouse binds (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="Gatehouse port (default 8000)")
    parser.add_argument("--demo-port", type=int, default=DEFAULT_DEMO_PORT, help="demo upstream port (default 8001)")
    args = parser.parse_args(argv)
    sys.exit(run(args.host, args.port, args.demo_port))


if __name__ == "__main__":
    main()
