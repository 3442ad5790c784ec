"""What the webhooks need for the life of the process: the store, the delivery client, the dispatcher.

``open_webhooks(settings)`` is the lifespan's one call: it opens the store
(migrating it), starts the store writer (group commit), the dispatcher and the
retention pruner, and on exit
stops them and closes everything, shielded so a cancelled shutdown still does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import httpx

from app.config.settings import Settings
from app.observability.metrics import Metrics
from app.outbound.clients import make_client
from app.outbound.transport import AiohttpTransport

if TYPE_CHECKING:
    from app.webhooks.batching import StoreWriter
    from app.webhooks.delivery import Dispatcher
    from app.webhooks.store import DeliveryStore

log = logging.getLogger("gatehouse.webhooks")


@dataclass(frozen=True, slots=True)
class Webhooks:
    store: DeliveryStore
    dispatcher: Dispatcher
    writer: StoreWriter  # concurrent intakes (and the dispatcher's writes) share one transaction


@contextlib.asynccontextmanager
async def open_webhooks(settings: Settings, metrics: Metrics | None = None) -> AsyncIterator[Webhooks | None]:
    """Yield the running webhooks, or None when no endpoint is configured (no store is opened).

    With ``metrics``, every delivery attempt is counted by endpoint and outcome.
    """
    if not settings.webhooks:
        yield None
        return
    # Imported here: the store pulls in SQLAlchemy (~11 MiB), which a gateway without webhooks never needs.
    from app.webhooks.batching import StoreWriter
    from app.webhooks.delivery import Dispatcher
    from app.webhooks.store import DeliveryStore

    store = await DeliveryStore.open(settings.webhook_store)
    concurrency = settings.webhook_dispatch_concurrency
    # Each attempt sets its own timeout (the target's); this default only bounds a call that sets none.
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    # HTTP/1.1 as the proxy carries it (``upstream_transport``): on httpcore's pool, attempts to one fast
    # target cost about half the dispatcher's CPU (its pool checks every idle connection per request).
    transport = AiohttpTransport(limits=limits) if settings.upstream_transport == "aiohttp" else None
    http = make_client(timeout=httpx.Timeout(30.0), transport=transport, limits=limits)
    writer = StoreWriter(store)
    dispatcher = Dispatcher(
        store,
        writer,
        settings.webhooks,
        http,
        interval=settings.webhook_dispatch_interval,
        batch=settings.webhook_dispatch_batch,
        concurrency=concurrency,
        lease_seconds=settings.webhook_lease_seconds,
        on_attempt=metrics.webhook_attempted if metrics is not None else None,
    )
    try:
        async with anyio.create_task_group() as tasks:
            await tasks.start(writer.run)
            await tasks.start(dispatcher.run)
            tasks.start_soon(
                lambda: prune_forever(
                    store, retention_days=settings.retention_days, interval=settings.webhook_prune_interval
                )
            )
            log.info(
                "webhooks ready: %d endpoint(s), store %s, dispatcher %s",
                len(settings.webhooks),
                store.backend,
                dispatcher.owner,
            )
            try:
                yield Webhooks(store, dispatcher, writer)
            finally:
                tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await http.aclose()
            await store.aclose()


async def prune_forever(store: DeliveryStore, *, retention_days: float, interval: float) -> None:
    """Delete delivered events older than the retention, now and every ``interval`` seconds."""
    from app.webhooks.database import StoreError, utc_now  # (SQLAlchemy: imported with the store)

    while True:
        try:
            pruned = await store.prune_delivered(utc_now() - timedelta(days=retention_days))
            if pruned:
                log.info("webhook retention: pruned %d delivered deliveries", pruned)
        except StoreError as exc:
            log.warning("webhook retention: prune failed: %s", exc)
        await anyio.sleep(interval)
