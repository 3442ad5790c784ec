"""``app.main:app`` under a server Gatehouse did not start: plain uvicorn, gunicorn's uvicorn worker.

``gatehouse serve`` configures uvicorn itself (``uvicorn_server.server_options``).
Started as ``uvicorn app.main:app`` instead, uvicorn's defaults would apply, and
two of them are unsafe for a gateway: ``--proxy-headers`` is on and trusts
``X-Forwarded-For`` from 127.0.0.1, so anything on the same host (a sidecar, a
local attacker, a health checker) sets the client address that rate limits,
``allow_ips`` and the access log use; and a shutdown signal neither marks the
app as draining nor waits a bounded time.

``ServerAdoption`` wraps the app and, when the lifespan has started and before
the server accepts a connection, finds the uvicorn ``Server`` that runs it (it
is the owner of the SIGTERM handler uvicorn installs while it serves) and makes
it run as ``gatehouse serve`` would: uvicorn's proxy-header middleware removed
(Gatehouse reads ``X-Forwarded-*`` itself, from ``trusted_proxies``), Gatehouse's
protocol classes (header timeout, connection cap, WebSocket limits),
``shutdown_grace`` as the graceful-shutdown bound, and a signal handler that
drains first and then stops the server without re-raising the signal, so a
drained stop exits 0. If the proxy headers cannot be removed, start-up fails
with a message naming ``--no-proxy-headers``.
"""

from __future__ import annotations

import logging
import math
import signal
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.assembly.drain import Drain
from app.config.settings import Settings
from app.config.websocket import MAX_MESSAGE_BYTES_CAP
from app.serving.http_protocol import GatehouseHttpProtocol
from app.serving.signals import drain_first
from app.serving.websocket_upgrade import gatehouse_websocket_protocol

log = logging.getLogger("gatehouse")

# uvicorn's stock HTTP protocols, by module: importing h11_impl would load h11 (11 modules) into
# every gateway, though ``gatehouse serve`` runs httptools; uvicorn imports it when it picks it.
STOCK_HTTP = frozenset(
    {("uvicorn.protocols.http.h11_impl", "H11Protocol"), ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol")}
)

CANNOT_DISABLE = (
    "uvicorn's proxy headers are on and Gatehouse could not turn them off: any client it trusts "
    "(by default 127.0.0.1) could set the client address with X-Forwarded-For. Run uvicorn with "
    "--no-proxy-headers (gunicorn: FORWARDED_ALLOW_IPS='' or --forwarded-allow-ips ''), and list "
    "real proxies in Gatehouse's trusted_proxies instead."
)


class ServerAdoption:
    """``app`` for any server; under uvicorn, that server is made to run as ``gatehouse serve`` does."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def adopting_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                refusal = self.adopt(scope.get("state", {}).get("settings"))
                if refusal is not None:
                    log.error("%s", refusal)
                    message = {"type": "lifespan.startup.failed", "message": refusal}
            await send(message)

        await self.app(scope, receive, adopting_send)

    def adopt(self, settings: Settings | None) -> str | None:
        """Configure the uvicorn server running this app; a refusal message if it cannot be made safe."""
        server = running_uvicorn_server()
        if server is None or settings is None:
            log.info(
                "not under uvicorn's server: make sure this server does not rewrite the client address from "
                "X-Forwarded-For (Gatehouse reads it itself, from trusted_proxies)"
            )
            return None
        config = server.config
        if config.proxy_headers:
            config.loaded_app = without_proxy_headers(config.loaded_app, self)
            if not reaches(config.loaded_app, self):
                return CANNOT_DISABLE
            config.proxy_headers = False
            log.info(
                "uvicorn's proxy headers are off (forwarded_allow_ips %r ignored): Gatehouse believes "
                "X-Forwarded-* only from trusted_proxies",
                config.forwarded_allow_ips,
            )
        use_gatehouse_protocols(config)
        if config.timeout_graceful_shutdown is None:
            config.timeout_graceful_shutdown = math.ceil(settings.shutdown_grace)
        stop = stopper(server)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, drain_first(stop, self.drain, settings.drain_delay))
        return None


def running_uvicorn_server() -> uvicorn.Server | None:
    """The uvicorn ``Server`` serving this process: uvicorn installs its bound ``handle_exit`` while it serves."""
    owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return owner if isinstance(owner, uvicorn.Server) else None


def without_proxy_headers(app: Any, stop_at: object) -> Any:
    """The middleware chain ``app`` with every ``ProxyHeadersMiddleware`` taken out (down to ``stop_at``)."""
    while isinstance(app, ProxyHeadersMiddleware):
        app = app.app
    node = app
    while node is not stop_at and hasattr(node, "app"):
        while isinstance(node.app, ProxyHeadersMiddleware):
            node.app = node.app.app
        node = node.app
    return app


def reaches(app: Any, target: object) -> bool:
    """``app``'s chain of ``.app`` wrappers leads to ``target`` without a proxy-header middleware on the way."""
    node = app
    for _ in range(32):
        if node is target:
            return True
        if isinstance(node, ProxyHeadersMiddleware) or not hasattr(node, "app"):
            return False
        node = node.app
    return False


def use_gatehouse_protocols(config: uvicorn.Config) -> None:
    """Gatehouse's HTTP and WebSocket protocol classes in place of uvicorn's stock ones (as ``server_options``)."""
    http = config.http_protocol_class
    if (getattr(http, "__module__", None), getattr(http, "__qualname__", None)) in STOCK_HTTP:
        config.http_protocol_class = GatehouseHttpProtocol
    elif not (isinstance(http, type) and issubclass(http, GatehouseHttpProtocol)):
        log.warning("uvicorn runs a custom HTTP protocol (%r): server.* limits are not enforced", http)
    ws = config.ws_protocol_class
    if ws is not None and getattr(ws, "__module__", "").startswith("uvicorn.protocols.websockets"):
        config.ws_protocol_class = gatehouse_websocket_protocol  # type: ignore[assignment]  # only ever called
        config.ws_max_size = MAX_MESSAGE_BYTES_CAP
        config.ws_per_message_deflate = False


def stopper(server: uvicorn.Server) -> Any:
    """uvicorn's ``handle_exit`` without remembering the signal: uvicorn re-raises a remembered
    signal once it has stopped, which would end a drained stop as "killed by SIGTERM" (143)."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        if server.should_exit and signum == signal.SIGINT:
            server.force_exit = True
        else:
            server.should_exit = True

    return stop
