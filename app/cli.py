"""``gatehouse serve``, ``gatehouse check-config`` and ``gatehouse hash``."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import getpass
import importlib.util
import logging.config
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from app.assembly.drain import Drain
from app.config.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from app.assembly.reload import Reloader

# Young-generation collections every 20,000 net allocations instead of 700.
GC_GEN0_THRESHOLD = 20_000


def settle_heap() -> None:
    """Move everything built at start-up out of the collector's way (server processes only).

    Full collections kept re-scanning the long-lived start-up objects (the app,
    settings models, route tables): under 64 concurrent requests they doubled
    the proxy's p99 latency. Freezing them once the app is built and collecting
    the young generation less often: p99 77 -> 36 ms and +10% req/s (wrk A/B,
    small JSON). Request garbage is still collected.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def worker_app() -> Any:
    """The app factory each ``--workers`` process runs."""
    from app.main import create_app

    app = create_app()
    settle_heap()
    return app


def server_options(
    *,
    host: str,
    port: int,
    log_level: str = "info",
    log_config: dict[str, Any] | None = None,
    shutdown_grace: float = 30.0,
) -> dict[str, Any]:
    """The uvicorn settings Gatehouse runs with (tests serve it with the same).

    uvicorn's own proxy-header handling is off: the gateway decides itself
    which X-Forwarded-* to believe (``trusted_proxies``). The Server header is
    Gatehouse's, the Date header uvicorn's; the upstream's copies are dropped.
    ``log_config`` (``app.observability.logging.logging_config``) puts uvicorn's
    loggers behind the redacting formatter; without it uvicorn keeps its own.
    """
    options = {
        "host": host,
        "port": port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "lifespan": "on",
        "proxy_headers": False,
        "server_header": False,
        "date_header": True,
        "headers": [("server", "gatehouse")],
        "log_level": log_level,
        "access_log": False,
        # In-flight requests and streams get this long after SIGTERM, then are cancelled.
        "timeout_graceful_shutdown": shutdown_grace,
    }
    if log_config is not None:
        options["log_config"] = log_config
    return options


def server_config(
    app: Any, *, host: str, port: int, log_level: str = "info", shutdown_grace: float = 30.0, **overrides: Any
) -> uvicorn.Config:
    options = server_options(host=host, port=port, log_level=log_level, shutdown_grace=shutdown_grace)
    return uvicorn.Config(app, **(options | overrides))


class DrainingServer(uvicorn.Server):
    """uvicorn's server, marking the app as draining the moment a shutdown signal arrives.

    uvicorn 0.54 closes its listening sockets first, then waits up to
    ``timeout_graceful_shutdown`` for in-flight exchanges, and only then runs
    the lifespan shutdown; readiness set there would flip too late for
    anyone to see it. So the flag is set here, in the signal handler.
    """

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.drain.start(f"signal {signal.Signals(sig).name}")
        super().handle_exit(sig, frame)


class ReloadingServer(DrainingServer):
    """The single-process server, which also reloads the config file on SIGHUP (``app.assembly.reload``)."""

    def __init__(self, config: uvicorn.Config, drain: Drain, reloader: Reloader) -> None:
        super().__init__(config, drain)
        self.reloader = reloader
        self._reloads: set[asyncio.Task[None]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if hasattr(signal, "SIGHUP"):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reload)

    def _reload(self) -> None:
        task = asyncio.create_task(self.reloader.reload_logged())
        self._reloads.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._reloads.discard)


def configure_logging(settings: Settings) -> dict[str, Any]:
    """Every logger of this process behind the redacting formatter; returns the config for uvicorn too."""
    from app.observability.logging import logging_config

    config = logging_config(settings, root=True)
    logging.config.dictConfig(config)
    return config


def _load(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        print(f"gatehouse: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(1) from None


def serve(args: argparse.Namespace) -> None:
    if args.config:
        # Workers re-read settings from the environment, so the file goes there too.
        os.environ["GATEHOUSE_CONFIG"] = os.path.abspath(args.config)
    settings = _load(None)  # fail fast, before any worker starts
    log_config = configure_logging(settings)
    # After a graceful shutdown uvicorn re-raises the signal it stopped on, which
    # would end the process as "killed by SIGTERM" (143). A drained stop is a success.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if args.workers > 1:
        # Each worker counts into files here; a scrape sums them (prometheus-client's multiprocess
        # mode). Set before any worker imports prometheus_client. On SIGHUP uvicorn restarts the
        # workers one by one, and each reads the config file anew.
        metrics_dir = tempfile.mkdtemp(prefix="gatehouse-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
        uvicorn.run(
            "app.cli:worker_app",
            factory=True,
            workers=args.workers,
            **server_options(
                host=args.host,
                port=args.port,
                log_level=settings.log_level,
                log_config=log_config,
                shutdown_grace=settings.shutdown_grace,
            ),
        )
        return
    from app.main import create_app

    app = create_app(settings)
    config = server_config(
        app,
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        log_config=log_config,
        shutdown_grace=settings.shutdown_grace,
    )
    settle_heap()
    ReloadingServer(config, app.state.drain, app.state.reloader).run()


def _exit_cleanly(_signum: int, _frame: object) -> None:
    sys.exit(0)


def check_config(args: argparse.Namespace) -> None:
    settings = _load(args.file)
    from app.proxy.routing import CompiledRoute

    print(f"configuration OK: {len(settings.routes)} route(s), ops at {settings.ops_prefix}")  # noqa: T201
    for route in settings.routes:
        compiled = CompiledRoute.compile(route, settings.timeout, *settings.policies_for(route))
        t = compiled.timeouts
        upstream = " ".join(f"{u.origin}{u.base_path}" for u in compiled.targets)
        print(  # noqa: T201
            f"  {route.name:<20} {route.prefix:<24} -> {upstream}"
            f"  strip_prefix={route.strip_prefix} methods={','.join(route.methods or ['*'])}"
            f" http2={route.http2} timeout=connect {t.connect}/read {t.read}/write {t.write}/pool {t.pool}"
        )


def hash_secret(args: argparse.Namespace) -> None:
    """Print the hash to put in settings; the secret is read from stdin, never from argv (ps, shell history)."""
    from app.config.hashing import hash_api_key, hash_password

    secret = getpass.getpass(f"{args.kind}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not secret:
        print("gatehouse: nothing to hash", file=sys.stderr)  # noqa: T201
        raise SystemExit(1)
    print(hash_api_key(secret) if args.kind == "api-key" else hash_password(secret))  # noqa: T201


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gatehouse", description="API gateway and webhook relay.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gateway")
    serve_cmd.add_argument("--config", help="YAML or JSON settings file (else GATEHOUSE_CONFIG)")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--workers", type=int, default=1)
    serve_cmd.set_defaults(handler=serve)
    check_cmd = commands.add_parser("check-config", help="validate a settings file and print its routes")
    check_cmd.add_argument("file")
    check_cmd.set_defaults(handler=check_config)
    hash_cmd = commands.add_parser("hash", help="hash an API key or password (read from stdin) for the settings")
    hash_cmd.add_argument("kind", choices=["api-key", "password"])
    hash_cmd.set_defaults(handler=hash_secret)
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
