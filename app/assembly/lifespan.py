"""Lifespan: what lives as long as the process, handed to requests as state."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypedDict

import anyio.to_thread

from app.assembly.drain import Drain
from app.assembly.gateway import Gateway
from app.assembly.heap import trim_heap_when_quiet
from app.assembly.ops_access import ops_only
from app.assembly.reload import Reloader
from app.config.server import OpsListen
from app.config.settings import Settings
from app.edge.resources import EdgeResources
from app.observability.metrics import multiprocess_dir
from app.webhooks.runtime import Webhooks, open_webhooks

log = logging.getLogger("gatehouse")


class State(TypedDict):
    """Lifespan state; requests reach it as ``scope["state"]`` / ``request.state``.

    The route table, upstream clients and pools live in ``gateway.generation``,
    which a config reload replaces: read them from there, per request.
    """

    settings: Settings  # as at start-up
    gateway: Gateway
    reloader: Reloader
    drain: Drain
    edge: EdgeResources  # the shared client for JWKS / OAuth token fetches, and the rate-limit storage
    webhooks: Webhooks | None  # the delivery store and dispatcher; None without webhook endpoints
    ops_address: tuple[str, int] | None  # where the ops listener (ops_listen) is bound; None without one


# Serves an ASGI app (with this lifespan state) on ``ops_listen`` until exited; yields the bound address.
# ``app.serving.ops_listener.serve_ops`` is the one; the assembly layer takes it as an argument.
ServeOps = Callable[[Any, State, OpsListen], AbstractAsyncContextManager[tuple[str, int]]]


def make_lifespan(
    settings: Settings, edge: EdgeResources, drain: Drain, serve_ops: ServeOps | None = None
) -> Callable[[Any], AbstractAsyncContextManager[State]]:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[State]:
        gateway: Gateway = app.gateway
        reloader: Reloader = app.state.reloader
        gateway.generation.open(settings.limits, settings.upstream_transport)
        await edge.open()
        background = AsyncExitStack()
        try:
            webhooks = await background.enter_async_context(open_webhooks(settings, gateway.metrics))
            await background.enter_async_context(trim_heap_when_quiet())
            state: State = {
                "settings": settings,
                "gateway": gateway,
                "reloader": reloader,
                "drain": drain,
                "edge": edge,
                "webhooks": webhooks,
                "ops_address": None,
            }
            if settings.ops_listen is not None and serve_ops is not None:
                # Closed first on the way out (LIFO): /readyz there answers 503 while in-flight requests drain.
                listener = serve_ops(ops_only(app, gateway.is_ops_path), state, settings.ops_listen)
                state["ops_address"] = await background.enter_async_context(listener)
        except BaseException:
            await background.aclose()
            await gateway.generation.close(0)
            await edge.aclose()
            raise
        log.info("gatehouse ready: %d route(s)", len(gateway.routes.routes))
        try:
            yield state
        finally:
            try:
                # uvicorn has stopped accepting and waited for in-flight exchanges (up to shutdown_grace).
                drain.start("lifespan shutdown")
                await background.aclose()  # the dispatcher hands back what it holds, then the store closes
                await reloader.aclose()
                await gateway.generation.close(0)
                await edge.aclose()
                if multiprocess_dir() is not None:
                    from prometheus_client import multiprocess

                    multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call] # this worker's live gauges leave the sum
                if gateway.tracer is not None:
                    # Export the buffered spans; off the event loop, since the exporter's HTTP call blocks.
                    await anyio.to_thread.run_sync(gateway.tracer.shutdown)
                log.info("gatehouse stopped: upstream clients closed")
            finally:  # even if a step above failed or was cancelled
                if gateway.access_log is not None:
                    gateway.access_log.close()  # the last buffered lines; later ones are written at once

    return lifespan
