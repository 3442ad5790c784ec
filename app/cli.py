"""``gatehouse serve``, ``gatehouse check-config``, ``gatehouse hash`` and ``gatehouse migrate``."""

from __future__ import annotations

import argparse
import atexit
import getpass
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import uvicorn

from app.config.settings import ConfigError, Settings, load_settings
from app.serving.signals import SUPERVISOR_PID
from app.serving.uvicorn_server import ReloadingServer, configure_logging, server_options, settle_heap


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
        _serve_workers(args, settings, log_config)
    elif settings.http_server == "hypercorn":
        _serve_hypercorn(args, settings)
    else:
        _serve_uvicorn(args, settings, log_config)


# The app factory each worker runs, by server (``app.serving.workers.SupervisedConfig``).
WORKER_APPS = {"uvicorn": "app.main:worker_app", "hypercorn": "app.main:supervised_app"}


def _serve_workers(args: argparse.Namespace, settings: Settings, log_config: dict[str, Any]) -> None:
    # Each worker counts into files here; a scrape sums them (prometheus-client's multiprocess
    # mode). Set before any worker imports prometheus_client. On SIGHUP the supervisor restarts
    # the workers one by one, and each reads the config file anew; POST /reload sends that SIGHUP.
    metrics_dir = tempfile.mkdtemp(prefix="gatehouse-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[SUPERVISOR_PID] = str(os.getpid())  # POST /reload in a worker signals this process
    atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    from app.serving.workers import SupervisedConfig, supervise

    options = _uvicorn_options(args, settings, log_config)
    app = WORKER_APPS[settings.http_server]
    supervise(SupervisedConfig(app, http_server=settings.http_server, factory=True, workers=args.workers, **options))


def _serve_uvicorn(args: argparse.Namespace, settings: Settings, log_config: dict[str, Any]) -> None:
    from app.main import create_app

    app = create_app(settings)
    config = uvicorn.Config(app, **_uvicorn_options(args, settings, log_config))
    settle_heap()
    ReloadingServer(config, app.state.drain, app.state.reloader, settings.drain_delay).run()


def _uvicorn_options(args: argparse.Namespace, settings: Settings, log_config: dict[str, Any]) -> dict[str, Any]:
    return server_options(
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        log_config=log_config,
        shutdown_grace=settings.shutdown_grace,
        tls=settings.tls,
    )


def _serve_hypercorn(args: argparse.Namespace, settings: Settings) -> None:
    from app.main import create_app
    from app.serving import hypercorn_server

    app = create_app(settings)
    config = hypercorn_server.hypercorn_config(settings, host=args.host, port=args.port)
    settle_heap()
    hypercorn_server.run(app, config, app.state.drain, app.state.reloader, settings.drain_delay)


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


def migrate(args: argparse.Namespace) -> None:
    """Migrate the webhook store now (as start-up would), or with ``--check`` say whether it needs it."""
    settings = _load(args.config)
    import anyio

    from app.webhooks.failures import StoreError
    from app.webhooks.migrations import migrate_store, store_status

    try:
        if args.check:
            status = anyio.run(store_status, settings.webhook_store)
            print(status.describe())  # noqa: T201
            raise SystemExit(0 if status.up_to_date else 1)
        migrated = anyio.run(migrate_store, settings.webhook_store)
    except StoreError as exc:
        print(f"gatehouse: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(1) from None
    found = ", ".join(migrated.found) or "nothing"
    if migrated.found == (migrated.head,):
        print(f"webhook store is at revision {migrated.head}: nothing to do")  # noqa: T201
    else:
        print(f"webhook store migrated from {found} to {migrated.head}")  # noqa: T201


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
    migrate_cmd = commands.add_parser("migrate", help="migrate the webhook store's schema (serve does it at start-up)")
    migrate_cmd.add_argument("--config", help="YAML or JSON settings file (else GATEHOUSE_CONFIG)")
    migrate_cmd.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 unless the store is at the newest revision"
    )
    migrate_cmd.set_defaults(handler=migrate)
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
