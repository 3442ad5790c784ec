"""The webhook store's connection, transactions and its read and operations side.

``DeliveryQueries`` holds what every store call needs (the engine, the clock,
the one transaction helper) and the calls the ops API and metrics make:
listing and inspecting events and deliveries, replay, retention pruning, and
the backlog gauges. ``DeliveryStore`` (``app.webhooks.store``) adds intake,
claiming and finishing on top.

Calls are shielded from cancellation, so a transaction once begun always ends
(commit or rollback) with its connection back in the pool; every wait inside is
bounded by a timeout instead. Every database failure surfaces as
``StoreUnavailable`` or ``StoreError`` (``app.webhooks.database``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy import ColumnElement, Select, and_, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.webhooks.database import translate_errors, utc_now
from app.webhooks.records import Attempt, Delivery, DeliveryStatus, EventSummary, ReplayResult, StoredEvent
from app.webhooks.tables import attempts, deliveries, events

Clock = Callable[[], datetime]


def _filtered(
    query: Select[Any],
    equal: list[tuple[ColumnElement[Any], object]],
    window: tuple[ColumnElement[Any], datetime | None, datetime | None],
    page: tuple[ColumnElement[Any], int | None],
) -> Select[Any]:
    """``query`` narrowed by each filter given: columns equal to a value, a time window
    (``since`` inclusive, ``until`` exclusive) and a page (ids below the last one seen)."""
    for column, value in equal:
        if value is not None:
            query = query.where(column == value)
    column, since, until = window
    if since is not None:
        query = query.where(column >= since)
    if until is not None:
        query = query.where(column < until)
    ids, before_id = page
    if before_id is not None:
        query = query.where(ids < before_id)
    return query


def _with_event(query: Select[Any]) -> Select[Any]:
    """``query`` on deliveries, plus each one's event's provider id and type."""
    return query.add_columns(events.c.provider_event_id, events.c.event_type).join(
        events, events.c.id == deliveries.c.event_id
    )


class DeliveryQueries:
    """The store's engine and transactions, and its read and operations calls."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock
        # SQLite has one writer at a time and its busy handler waits by sleeping (1 ms, 2 ms ... 100 ms),
        # so this process's transactions queue here instead; other processes still meet busy_timeout.
        self._writer: AbstractAsyncContextManager[Any] = (
            anyio.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._engine.dispose()

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def backend(self) -> str:
        return self._engine.dialect.name

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        # Shielded: a caller cancelled mid-transaction (a client hanging up) still sees it
        # commit or roll back and the connection return to the pool. Under anyio's cancel
        # scopes the driver's own clean-up would otherwise be cancelled too, leaking the
        # connection. Every wait inside is bounded (see create_store_engine).
        with anyio.CancelScope(shield=True), translate_errors():
            async with self._writer, self._engine.begin() as conn:
                yield conn

    def _due(self, now: datetime) -> Any:
        return or_(
            and_(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now),
            and_(deliveries.c.status == "delivering", deliveries.c.lease_expires_at <= now),
        )

    # --- operations ----------------------------------------------------------

    async def list_events(
        self,
        *,
        endpoint: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        provider_event_id: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[EventSummary]:
        """Newest first, filtered by each argument given (``since`` inclusive, ``until`` exclusive,
        on ``received_at``); page with ``before_id`` = the last id seen."""
        query = select(
            events.c.id,
            events.c.endpoint,
            events.c.provider_event_id,
            events.c.event_type,
            events.c.received_at,
            func.length(events.c.body).label("body_size"),
            select(func.count())
            .where(deliveries.c.event_id == events.c.id)
            .correlate(events)
            .scalar_subquery()
            .label("delivery_count"),
        )
        query = _filtered(
            query,
            [
                (events.c.endpoint, endpoint),
                (events.c.provider_event_id, provider_event_id),
                (events.c.event_type, event_type),
            ],
            (events.c.received_at, since, until),
            (events.c.id, before_id),
        )
        async with self._transaction() as conn:
            rows = await conn.execute(query.order_by(events.c.id.desc()).limit(limit))
            return [
                EventSummary(
                    r.id, r.endpoint, r.provider_event_id, r.received_at, r.body_size, r.delivery_count, r.event_type
                )
                for r in rows
            ]

    async def get_event(self, event_id: int) -> StoredEvent | None:
        async with self._transaction() as conn:
            row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
        if row is None:
            return None
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in row.headers]
        return StoredEvent(row.id, row.endpoint, row.provider_event_id, row.received_at, headers, row.body)

    async def list_deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        endpoint: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        target: str | None = None,
        provider_event_id: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Delivery]:
        """Newest first, each with its event's provider id and type, filtered by each argument
        given (``since`` inclusive, ``until`` exclusive, on ``created_at``); page with ``before_id``."""
        query = _with_event(select(deliveries))
        query = _filtered(
            query,
            [
                (deliveries.c.status, status),
                (deliveries.c.endpoint, endpoint),
                (deliveries.c.target, target),
                (events.c.provider_event_id, provider_event_id),
                (events.c.event_type, event_type),
            ],
            (deliveries.c.created_at, since, until),
            (deliveries.c.id, before_id),
        )
        async with self._transaction() as conn:
            rows = await conn.execute(query.order_by(deliveries.c.id.desc()).limit(limit))
            return [Delivery.from_row(row) for row in rows]

    async def get_delivery_with_attempts(self, delivery_id: int) -> tuple[Delivery, list[Attempt]] | None:
        async with self._transaction() as conn:
            query = _with_event(select(deliveries)).where(deliveries.c.id == delivery_id)
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            rows = await conn.execute(
                select(attempts).where(attempts.c.delivery_id == delivery_id).order_by(attempts.c.id)
            )
            return Delivery.from_row(row), [Attempt.from_row(r) for r in rows]

    def _replay_values(self, now: datetime) -> dict[str, Any]:
        return {
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        }

    async def replay(self, delivery_id: int) -> ReplayResult:
        """Send again from the start of the schedule, now (dead, delivered or pending; not in flight)."""
        now = self._clock()
        async with self._transaction() as conn:
            result = await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id, deliveries.c.status != "delivering")
                .values(**self._replay_values(now))
                .returning(deliveries.c.id)
            )
            if result.first() is not None:
                return ReplayResult.REPLAYED
            found = await conn.scalar(select(deliveries.c.id).where(deliveries.c.id == delivery_id))
            return ReplayResult.NOT_FOUND if found is None else ReplayResult.IN_FLIGHT

    async def replay_dead(self, endpoint: str | None = None) -> int:
        """Replay every dead delivery (of one endpoint); returns how many."""
        query = update(deliveries).where(deliveries.c.status == "dead")
        if endpoint is not None:
            query = query.where(deliveries.c.endpoint == endpoint)
        async with self._transaction() as conn:
            result = await conn.execute(query.values(**self._replay_values(self._clock())).returning(deliveries.c.id))
            return len(result.all())

    async def prune_delivered(self, older_than: datetime) -> int:
        """Delete deliveries delivered before ``older_than`` (with their attempts), then events
        received before it that have no delivery left; returns the number of deliveries deleted.

        A pruned event no longer dedupes: keep ``older_than`` beyond the providers' retry window.
        """
        async with self._transaction() as conn:
            # Attempts first: the cascade would do it, but only with foreign keys enforced.
            old = select(deliveries.c.id).where(
                deliveries.c.status == "delivered", deliveries.c.updated_at < older_than
            )
            await conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(old.scalar_subquery())))
            result = await conn.execute(
                delete(deliveries)
                .where(deliveries.c.status == "delivered", deliveries.c.updated_at < older_than)
                .returning(deliveries.c.id)
            )
            pruned = len(result.all())
            orphan = ~exists().where(deliveries.c.event_id == events.c.id)
            await conn.execute(delete(events).where(events.c.received_at < older_than, orphan))
            return pruned

    # --- metrics -------------------------------------------------------------

    async def count_due(self) -> int:
        """Deliveries waiting for an attempt right now (the backlog)."""
        async with self._transaction() as conn:
            return int(
                await conn.scalar(select(func.count()).select_from(deliveries).where(self._due(self._clock()))) or 0
            )

    async def oldest_due_age(self) -> float | None:
        """Seconds the longest-waiting due delivery has been due; None when nothing is due."""
        now = self._clock()
        async with self._transaction() as conn:
            pending = await conn.scalar(
                select(func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now
                )
            )
            expired = await conn.scalar(
                select(func.min(deliveries.c.lease_expires_at)).where(
                    deliveries.c.status == "delivering", deliveries.c.lease_expires_at <= now
                )
            )
        oldest = min((t for t in (pending, expired) if t is not None), default=None)
        return None if oldest is None else (now - oldest).total_seconds()
