"""The application factory: ``create_app(settings)``; ``app`` for ``uvicorn app.main:app``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.edge.runtime import Edge
from app.errors import install_error_handlers
from app.lifespan import make_lifespan
from app.observability.access import AccessLog
from app.observability.logging import redaction_names
from app.observability.metrics import Metrics, upstream_state_metrics
from app.observability.tracing import Tracer, build_tracer
from app.ops import router as ops_router
from app.proxy.gateway import Gateway
from app.proxy.generation import Generation
from app.reload import Reloader
from app.resilience.drain import Drain
from app.settings import Settings, load_settings
from app.webhooks.intake import WebhookIntake
from app.webhooks.ops import router as webhooks_ops_router


class GatehouseApp(FastAPI):
    """FastAPI for the ops endpoints; every other HTTP request goes to the gateway.

    The split happens here, before any of FastAPI's per-request machinery
    (middleware, telemetry checks, routing), so the proxy's hot path is the
    gateway alone. Webhook intake paths are exact, so they cost the proxy one
    dict lookup. The gateway and the intake render their own errors.
    """

    gateway: Gateway
    webhook_intake: WebhookIntake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.gateway.is_ops_path(scope["path"]):
            if self.webhook_intake.handles(scope["path"]):
                await self.webhook_intake(scope, receive, send)
                return
            await self.gateway(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, tracer: Tracer | None = None) -> FastAPI:
    """Build a Gatehouse app from ``settings`` (default: file + environment).

    ``app.state.drain`` is the app's ``Drain``: the server sets it when a
    shutdown signal arrives, before it stops accepting (see ``app.cli``).
    ``tracer`` overrides the one ``settings.tracing`` asks for (tests pass one
    with an in-memory exporter).
    """
    settings = settings if settings is not None else load_settings()
    drain = Drain()
    edge = Edge(settings)
    metrics = Metrics()
    filters = edge.filters()
    generation = Generation.from_settings(settings, filters, metrics)
    app = GatehouseApp(
        title="Gatehouse",
        lifespan=make_lifespan(settings, edge, drain),
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(ops_router, prefix=settings.ops_prefix)
    app.include_router(webhooks_ops_router, prefix=settings.ops_prefix + "/webhooks")
    app.webhook_intake = WebhookIntake(settings.webhooks, metrics)
    _, params = redaction_names(settings)
    app.gateway = Gateway(
        generation,
        ops_prefix=settings.ops_prefix,
        metrics=metrics,
        trusted_proxies=settings.trusted_proxies,
        max_header_count=settings.max_header_count,
        max_header_bytes=settings.max_header_bytes,
        access_log=AccessLog(settings.access_log, params) if settings.access_log != "off" else None,
        tracer=tracer if tracer is not None else build_tracer(settings.tracing),
    )
    metrics.watch(upstream_state_metrics(lambda: app.gateway.generation.upstreams.pools))
    app.state.drain = drain
    app.state.reloader = Reloader(app.gateway, settings, filters)
    install_error_handlers(app)
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access, so importing this module reads no settings.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
