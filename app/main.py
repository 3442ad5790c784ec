"""``app.main:app``: Gatehouse as an ASGI app for any server; ``create_app`` for tests and embedding.

``app`` is built on first access, so importing this module reads no settings. It
is wrapped in ``ServerAdoption`` (``app.serving.any_server``): under plain uvicorn
or gunicorn's uvicorn worker it turns uvicorn's proxy headers off and drains on
SIGTERM, as ``gatehouse serve`` does. ``supervised_app`` is the app each
``gatehouse serve --workers N`` process serves, ``worker_app`` the factory
uvicorn's workers call.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.assembly import factory
from app.config.settings import Settings, load_settings
from app.observability.lines import Sink
from app.observability.tracing import Tracer
from app.serving.any_server import ServerAdoption
from app.serving.ops_listener import serve_ops
from app.serving.signals import drain_worker_on_signals, reload_all_workers, under_supervisor
from app.serving.uvicorn_server import settle_heap

__all__ = ["create_app", "supervised_app", "worker_app"]

_app: ServerAdoption | None = None


def create_app(
    settings: Settings | None = None, *, tracer: Tracer | None = None, access_write: Sink | None = None
) -> FastAPI:
    """``app.assembly.factory.create_app`` with this process's servers (the ``ops_listen`` listener)."""
    return factory.create_app(settings, tracer=tracer, access_write=access_write, serve_ops=serve_ops)


def supervised_app(settings: Settings) -> FastAPI:
    """The app of one ``--workers`` process, under either server (``app.serving.workers``).

    ``settings`` are read in the worker, so one started by a reload serves the new file;
    a ``POST /reload`` it answers makes the supervisor restart every worker.
    """
    app = create_app(settings)
    if under_supervisor():
        app.state.reloader.fan_out = reload_all_workers
    settle_heap()
    return app


def worker_app() -> Any:
    """The app factory each ``--workers`` process under uvicorn runs (uvicorn calls it inside its signal handling)."""
    settings = load_settings()
    app = supervised_app(settings)
    drain_worker_on_signals(app.state.drain, settings.drain_delay)
    return app


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            built = create_app()
            _app = ServerAdoption(built, built.state.drain)
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
