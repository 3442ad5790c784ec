"""The durable webhook store: events, their deliveries and every attempt.

``DeliveryStore`` is the seam between intake, dispatcher and ops API. It runs
one code path through SQLAlchemy Core on two backends: SQLite (aiosqlite, WAL,
``synchronous=FULL``, every transaction ``BEGIN IMMEDIATE``) for one process,
PostgreSQL (asyncpg) for replicas sharing one database.

A delivery moves ``pending → delivering → delivered | dead``; ``schedule_retry``
sends it back to ``pending`` with a later ``next_attempt_at``, and ``replay`` back to
``pending`` now. Claiming is atomic: a claim sets ``delivering`` with a lease
(owner, expiry) and counts the attempt; a lease that expires (its holder
crashed) makes the delivery claimable again. Finishing calls name the owner and
do nothing (return False) once the lease has passed to someone else.

Calls are shielded from cancellation, so a transaction once begun always ends
(commit or rollback) with its connection back in the pool; every wait inside is
bounded by a timeout instead. Every database failure surfaces as ``StoreUnavailable`` (connectivity, locks,
time-outs: answer 503 and let the provider retry) or ``StoreError``; both come
from ``app.webhooks.database``. The read and operations calls live in
``app.webhooks.queries``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Self

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.webhooks.database import StoreError, StoreUnavailable, create_store_engine, utc_now
from app.webhooks.queries import Clock, DeliveryQueries
from app.webhooks.records import (
    AttemptResult,
    ClaimedDelivery,
    Delivery,
    RecordedEvent,
)
from app.webhooks.tables import SchemaTooNew, attempts, deliveries, events, migrate

__all__ = ["DeliveryStore", "StoreError", "StoreUnavailable"]

RawHeaders = Sequence[tuple[bytes, bytes]]


class DeliveryStore(DeliveryQueries):
    """Durable events and deliveries; see the module docstring for the life of a delivery."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        super().__init__(engine, clock=clock)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        clock: Clock = utc_now,
        busy_timeout_ms: int = 5000,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
    ) -> Self:
        """Connect and migrate. ``schema`` (Postgres only) holds the tables; it is created if missing."""
        engine = create_store_engine(
            url,
            schema=schema,
            busy_timeout_ms=busy_timeout_ms,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )
        store = cls(engine, clock=clock)
        try:
            async with store._transaction() as conn:
                try:
                    await migrate(conn, schema=schema)
                except SchemaTooNew as exc:
                    raise StoreError(str(exc)) from exc
        except BaseException:
            await store.aclose()
            raise
        return store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- intake --------------------------------------------------------------

    async def record_event(
        self,
        endpoint: str,
        provider_event_id: str | None,
        headers: RawHeaders,
        body: bytes,
        targets: Sequence[str],
    ) -> RecordedEvent:
        """Commit the event and one pending delivery per target, in one transaction.

        A repeat of ``(endpoint, provider_event_id)`` stores nothing and returns the
        first event's id with ``duplicate=True``; a None id is never a repeat.
        """
        now = self._clock()
        stored_headers = [[name.decode("latin-1"), value.decode("latin-1")] for name, value in headers]
        async with self._transaction() as conn:
            new_id = await conn.scalar(
                self._insert(events)
                .values(
                    endpoint=endpoint,
                    provider_event_id=provider_event_id,
                    received_at=now,
                    headers=stored_headers,
                    body=body,
                )
                .on_conflict_do_nothing(index_elements=["endpoint", "provider_event_id"])
                .returning(events.c.id)
            )
            if new_id is None:
                first = await conn.scalar(
                    select(events.c.id).where(
                        events.c.endpoint == endpoint, events.c.provider_event_id == provider_event_id
                    )
                )
                if first is None:  # the first copy was pruned between the two statements
                    raise StoreUnavailable("webhook store: duplicate event vanished; retry")
                return RecordedEvent(int(first), True, ())
            delivery_ids: list[int] = []
            for target in targets:
                delivery_id = await conn.scalar(
                    insert(deliveries)
                    .values(
                        event_id=new_id,
                        endpoint=endpoint,
                        target=target,
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(deliveries.c.id)
                )
                delivery_ids.append(int(delivery_id))
            return RecordedEvent(int(new_id), False, tuple(delivery_ids))

    # --- dispatch ------------------------------------------------------------

    async def claim_due(self, owner: str, lease_seconds: float, limit: int) -> list[ClaimedDelivery]:
        """Atomically lease up to ``limit`` due deliveries (oldest first) to ``owner``.

        Due: pending with ``next_attempt_at`` reached, or delivering with an expired
        lease. Postgres skips rows another claimer has locked (``FOR UPDATE SKIP
        LOCKED``); SQLite's ``BEGIN IMMEDIATE`` serialises claimers. Either way no
        delivery is leased to two owners at once.
        """
        now = self._clock()
        picked = (
            select(deliveries.c.id)
            .where(self._due(now))
            .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self._transaction() as conn:
            ids = await self._lease(conn, deliveries.c.id.in_(picked.scalar_subquery()), owner, lease_seconds, now)
            return await self._load_claimed(conn, ids)

    async def claim_one(self, delivery_id: int, owner: str, lease_seconds: float) -> ClaimedDelivery | None:
        """Lease one delivery now, whatever its ``next_attempt_at`` (the attempt right after the ack).

        None when it does not exist, is finished, or is leased to someone else.
        """
        now = self._clock()
        claimable = or_(
            deliveries.c.status == "pending",
            and_(deliveries.c.status == "delivering", deliveries.c.lease_expires_at <= now),
        )
        async with self._transaction() as conn:
            ids = await self._lease(conn, and_(deliveries.c.id == delivery_id, claimable), owner, lease_seconds, now)
            claimed = await self._load_claimed(conn, ids)
            return claimed[0] if claimed else None

    async def _lease(
        self, conn: AsyncConnection, where: Any, owner: str, lease_seconds: float, now: datetime
    ) -> list[int]:
        result = await conn.execute(
            update(deliveries)
            .where(where)
            .values(
                status="delivering",
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=deliveries.c.attempts + 1,
                updated_at=now,
            )
            .returning(deliveries.c.id)
        )
        return [int(row_id) for row_id in result.scalars()]

    async def _load_claimed(self, conn: AsyncConnection, ids: list[int]) -> list[ClaimedDelivery]:
        if not ids:
            return []
        rows = await conn.execute(
            select(deliveries, events.c.headers, events.c.body, events.c.provider_event_id)
            .join(events, events.c.id == deliveries.c.event_id)
            .where(deliveries.c.id.in_(ids))
            .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        )
        return [
            ClaimedDelivery(
                delivery=Delivery.from_row(row),
                provider_event_id=row.provider_event_id,
                headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in row.headers],
                body=row.body,
            )
            for row in rows
        ]

    async def _insert_attempt(self, conn: AsyncConnection, delivery_id: int, result: AttemptResult) -> None:
        await conn.execute(
            insert(attempts).values(
                delivery_id=delivery_id,
                started_at=result.started_at,
                duration_ms=result.duration_ms,
                status_code=result.status_code,
                error=result.error,
            )
        )

    async def _finish(
        self, delivery_id: int, owner: str, attempt: AttemptResult | None, values: dict[str, Any]
    ) -> bool:
        now = self._clock()
        async with self._transaction() as conn:
            if attempt is not None:
                await self._insert_attempt(conn, delivery_id, attempt)
                values = {"last_status": attempt.status_code, **values}
            result = await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == delivery_id,
                    deliveries.c.status == "delivering",
                    deliveries.c.lease_owner == owner,
                )
                .values(lease_owner=None, lease_expires_at=None, updated_at=now, **values)
                .returning(deliveries.c.id)
            )
            return result.first() is not None

    async def mark_delivered(self, delivery_id: int, owner: str, attempt: AttemptResult | None = None) -> bool:
        """Finish as delivered; False if ``owner`` no longer holds the lease."""
        return await self._finish(
            delivery_id, owner, attempt, {"status": "delivered", "next_attempt_at": None, "last_error": None}
        )

    async def schedule_retry(
        self, delivery_id: int, owner: str, *, delay: float, reason: str, attempt: AttemptResult | None = None
    ) -> bool:
        """Back to pending, due ``delay`` seconds from now; False if the lease was lost."""
        next_at = self._clock() + timedelta(seconds=delay)
        values = {"status": "pending", "next_attempt_at": next_at, "last_error": reason}
        return await self._finish(delivery_id, owner, attempt, values)

    async def mark_dead(
        self, delivery_id: int, owner: str, *, reason: str, attempt: AttemptResult | None = None
    ) -> bool:
        """Finish as dead (kept for inspection and replay); False if the lease was lost."""
        values = {"status": "dead", "next_attempt_at": None, "last_error": reason}
        return await self._finish(delivery_id, owner, attempt, values)
