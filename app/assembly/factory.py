"""The application factory: ``create_app(settings)`` builds one Gatehouse ASGI app."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.assembly.drain import Drain
from app.assembly.gateway import Gateway
from app.assembly.generation import Generation
from app.assembly.lifespan import ServeOps, make_lifespan
from app.assembly.ops import router as ops_router
from app.assembly.problems import install_error_handlers
from app.assembly.reload import Reloader
from app.assembly.webhooks_ops import router as webhooks_ops_router
from app.config.settings import Settings, load_settings
from app.edge.resources import EdgeResources
from app.observability.access import AccessLog
from app.observability.lines import LineBuffer, Sink, stdout_sink
from app.observability.logging import redaction_names
from app.observability.metrics import Metrics, upstream_state_metrics
from app.observability.tracing import Tracer, build_tracer

if TYPE_CHECKING:
    from app.assembly.websocket import WebSocketGateway
    from app.webhooks.intake import WebhookIntake


class GatehouseApp(FastAPI):
    """FastAPI for the ops endpoints; every other HTTP request goes to the gateway.

    The split happens here, before any of FastAPI's per-request machinery
    (middleware, telemetry checks, routing), so the proxy's hot path is the
    gateway alone. Webhook intake paths are exact, so they cost the proxy one
    dict lookup (none without webhook endpoints: then there is no intake).
    The gateway and the intake render their own errors.
    """

    gateway: Gateway
    webhook_intake: WebhookIntake | None = None
    make_websocket_gateway: Callable[[], WebSocketGateway]
    _websocket_gateway: WebSocketGateway | None = None

    @property
    def websocket_gateway(self) -> WebSocketGateway:
        """Built at the first WebSocket, as uvicorn's protocol for it is (``app.serving.websocket_upgrade``):
        its module brings the relay and websockets' client."""
        if self._websocket_gateway is None:
            self._websocket_gateway = self.make_websocket_gateway()
        return self._websocket_gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.gateway.is_ops_path(scope["path"]):
            intake = self.webhook_intake
            if intake is not None and intake.handles(scope["path"]):
                await intake(scope, receive, send)
                return
            await self.gateway(scope, receive, send)
            return
        if scope["type"] == "websocket" and not self.gateway.is_ops_path(scope["path"]):
            await self.websocket_gateway(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    tracer: Tracer | None = None,
    access_write: Sink | None = None,
    serve_ops: ServeOps | None = None,
) -> FastAPI:
    """Build a Gatehouse app from ``settings`` (default: file + environment).

    ``app.state.drain`` is the app's ``Drain``: the server sets it when a
    shutdown signal arrives, before it stops accepting (see ``app.cli``).
    ``tracer`` overrides the one ``settings.tracing`` asks for (tests pass one
    with an in-memory exporter). ``access_write`` receives the access log's
    batches (whole lines, as bytes) instead of stdout. ``serve_ops`` runs the
    ``ops_listen`` listener (``app.main.create_app`` passes the server layer's).
    """
    settings = settings if settings is not None else load_settings()
    if settings.ops_listen is not None and serve_ops is None:
        raise ValueError("ops_listen is set but no serve_ops was given: build the app with app.main.create_app")
    drain = Drain()
    edge = EdgeResources(settings)
    metrics = Metrics()
    generation = Generation.from_settings(settings, edge, metrics)
    app = GatehouseApp(
        title="Gatehouse",
        lifespan=make_lifespan(settings, edge, drain, serve_ops),
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.include_router(ops_router, prefix=settings.ops_prefix)
    app.include_router(webhooks_ops_router, prefix=settings.ops_prefix + "/webhooks")
    if settings.webhooks:
        # Built, and its verifiers imported (0.6 MiB), only for endpoints: a reload cannot add them (restart_required).
        from app.webhooks.intake import WebhookIntake

        app.webhook_intake = WebhookIntake(settings.webhooks, metrics)
    headers, params = redaction_names(settings)
    access_log = None
    # The access log is written at info: ``log_level: warning`` silences it too.
    if settings.access_log != "off" and settings.log_level in ("debug", "info"):
        lines = LineBuffer(access_write or stdout_sink, interval=settings.access_log_flush_interval)
        access_log = AccessLog(settings.access_log, params, lines, headers)
    app.gateway = Gateway(
        generation,
        ops_prefix=settings.ops_prefix,
        metrics=metrics,
        trusted_proxies=settings.trusted_proxies,
        max_header_count=settings.max_header_count,
        max_header_bytes=settings.max_header_bytes,
        access_log=access_log,
        tracer=tracer if tracer is not None else build_tracer(settings.tracing, params),
    )

    def make_websocket_gateway() -> WebSocketGateway:
        from app.assembly.websocket import WebSocketGateway

        return WebSocketGateway(
            app.gateway,
            drain,
            shutdown_grace=settings.shutdown_grace,
            drain_delay=settings.drain_delay,
            trusted_proxies=settings.trusted_proxies,
            max_header_count=settings.max_header_count,
            max_header_bytes=settings.max_header_bytes,
            access_log=access_log,
        )

    app.make_websocket_gateway = make_websocket_gateway
    metrics.watch(upstream_state_metrics(lambda: app.gateway.generation.pools.pools))
    app.state.drain = drain
    app.state.reloader = Reloader(app.gateway, settings, edge)
    install_error_handlers(app)
    return app
