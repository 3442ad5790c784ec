"""The application factory: ``create_app(settings)``; ``app`` for ``uvicorn app.main:app``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.edge.runtime import Edge
from app.errors import install_error_handlers
from app.lifespan import make_lifespan
from app.ops import router as ops_router
from app.proxy.gateway import Gateway
from app.proxy.routing import CompiledRoute, RouteTable
from app.resilience.drain import Drain
from app.resilience.upstreams import Upstreams
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


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build a Gatehouse app from ``settings`` (default: file + environment).

    ``app.state.drain`` is the app's ``Drain``: the server sets it when a
    shutdown signal arrives, before it stops accepting (see ``app.cli``).
    """
    settings = settings if settings is not None else load_settings()
    routes = RouteTable(
        CompiledRoute.compile(route, settings.timeout, settings.resilience_for(route)) for route in settings.routes
    )
    upstreams = Upstreams(routes)
    drain = Drain()
    edge = Edge(settings)
    app = GatehouseApp(
        title="Gatehouse",
        lifespan=make_lifespan(settings, routes, edge, upstreams, drain),
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(ops_router, prefix=settings.ops_prefix)
    app.include_router(webhooks_ops_router, prefix=settings.ops_prefix + "/webhooks")
    app.webhook_intake = WebhookIntake(settings.webhooks)
    app.gateway = Gateway(
        routes=routes,
        ops_prefix=settings.ops_prefix,
        trusted_proxies=settings.trusted_proxies,
        upstreams=upstreams,
        # The bulkhead comes last: only requests that passed every other filter take a slot.
        filters=[*edge.filters(), upstreams.bulkhead_for],
        max_header_count=settings.max_header_count,
        max_header_bytes=settings.max_header_bytes,
    )
    app.state.drain = drain
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
