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
from datetime import timedelta
from typing import Self, cast

from sqlalchemy import and_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from app.webhooks.bulk import claimable, finish_deliveries, insert_events, lease, load_claimed
from app.webhooks.database import StoreError, StoreUnavailable, create_store_engine, utc_now
from app.webhooks.migrations import migrate
from app.webhooks.queries import Clock, DeliveryQueries
from app.webhooks.records import AttemptResult, Claim, ClaimedDelivery, Finish, NewEvent, RecordedEvent
from app.webhooks.tables import deliveries

__all__ = ["DeliveryStore", "StoreError", "StoreUnavailable"]

RawHeaders = Sequence[tuple[bytes, bytes]]
Write = NewEvent | Claim | Finish  # what ``write_many`` takes


def _by_lease(claims: list[tuple[int, Claim]]) -> dict[tuple[str, float], list[tuple[int, Claim]]]:
    groups: dict[tuple[str, float], list[tuple[int, Claim]]] = {}
    for i, claim in claims:
        groups.setdefault((claim.owner, claim.lease_seconds), []).append((i, claim))
    return groups


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
        """Connect and migrate (``app.webhooks.migrations``); ``SchemaTooNew`` if a newer Gatehouse migrated it.

        ``schema`` (Postgres only) holds the tables; it is created if missing.
        """
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
                await migrate(conn, schema=schema)
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
        new = NewEvent(endpoint, provider_event_id, list(headers), body, tuple(targets))
        return cast(RecordedEvent, (await self.write_many([new]))[0])

    async def write_many(self, batch: Sequence[Write]) -> list[object]:
        """Intakes, claims and outcomes in one transaction, answered in order (group commit).

        Outcomes go first and claims last, so a claim finds the deliveries of this batch's intakes.
        """
        if not batch:
            return []
        answers: list[object] = [None] * len(batch)
        finishes = [(i, w) for i, w in enumerate(batch) if isinstance(w, Finish)]
        intakes = [(i, w) for i, w in enumerate(batch) if isinstance(w, NewEvent)]
        claims = [(i, w) for i, w in enumerate(batch) if isinstance(w, Claim)]
        now = self._clock()
        async with self._transaction() as conn:
            if finishes:
                kept = await finish_deliveries(conn, [w for _, w in finishes], now)
                for (i, _), ok in zip(finishes, kept, strict=True):
                    answers[i] = ok
            if intakes:
                recorded = await insert_events(conn, self._insert, [w for _, w in intakes], now)
                for (i, _), answer in zip(intakes, recorded, strict=True):
                    answers[i] = answer
            for (owner, lease_seconds), group in _by_lease(claims).items():
                where = and_(deliveries.c.id.in_({w.delivery_id for _, w in group}), claimable(now))
                ids = await lease(conn, where, owner, lease_seconds, now)
                by_id = {c.delivery.id: c for c in await load_claimed(conn, ids)}
                for i, w in group:
                    answers[i] = by_id.pop(w.delivery_id, None)
        return answers

    # --- dispatch ------------------------------------------------------------

    async def claim_due(
        self, owner: str, lease_seconds: float, limit: int, *, exclude: Sequence[tuple[str, str]] = ()
    ) -> list[ClaimedDelivery]:
        """Atomically lease up to ``limit`` due deliveries (oldest first) to ``owner``.

        Due: pending with ``next_attempt_at`` reached, or delivering with an expired
        lease. Postgres skips rows another claimer has locked (``FOR UPDATE SKIP
        LOCKED``); SQLite's ``BEGIN IMMEDIATE`` serialises claimers. Either way no
        delivery is leased to two owners at once. ``exclude`` names (endpoint, target)
        pairs to leave alone (targets that cannot take an attempt now).
        """
        now = self._clock()
        due = self._due(now)
        if exclude:
            due = and_(due, tuple_(deliveries.c.endpoint, deliveries.c.target).not_in(list(exclude)))
        picked = (
            select(deliveries.c.id)
            .where(due)
            .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self._transaction() as conn:
            ids = await lease(conn, deliveries.c.id.in_(picked.scalar_subquery()), owner, lease_seconds, now)
            return await load_claimed(conn, ids)

    async def claim_one(self, delivery_id: int, owner: str, lease_seconds: float) -> ClaimedDelivery | None:
        """Lease one delivery now, whatever its ``next_attempt_at`` (the attempt right after the ack).

        None when it does not exist, is finished, or is leased to someone else.
        """
        answer = (await self.write_many([Claim(delivery_id, owner, lease_seconds)]))[0]
        return cast(ClaimedDelivery | None, answer)

    # Outcomes, to record with ``write_many`` (the dispatcher batches them) or one at a time below.

    @staticmethod
    def delivered(delivery_id: int, owner: str, attempt: AttemptResult | None = None) -> Finish:
        values = {"status": "delivered", "next_attempt_at": None, "last_error": None}
        return Finish(delivery_id, owner, attempt, values)

    def retry(
        self, delivery_id: int, owner: str, *, delay: float, reason: str, attempt: AttemptResult | None = None
    ) -> Finish:
        next_at = self._clock() + timedelta(seconds=delay)
        values = {"status": "pending", "next_attempt_at": next_at, "last_error": reason}
        return Finish(delivery_id, owner, attempt, values)

    @staticmethod
    def dead(delivery_id: int, owner: str, *, reason: str, attempt: AttemptResult | None = None) -> Finish:
        values = {"status": "dead", "next_attempt_at": None, "last_error": reason}
        return Finish(delivery_id, owner, attempt, values)

    async def _finish(self, finish: Finish) -> bool:
        return cast(bool, (await self.write_many([finish]))[0])

    async def mark_delivered(self, delivery_id: int, owner: str, attempt: AttemptResult | None = None) -> bool:
        """Finish as delivered; False if ``owner`` no longer holds the lease."""
        return await self._finish(self.delivered(delivery_id, owner, attempt))

    async def schedule_retry(
        self, delivery_id: int, owner: str, *, delay: float, reason: str, attempt: AttemptResult | None = None
    ) -> bool:
        """Back to pending, due ``delay`` seconds from now; False if the lease was lost."""
        return await self._finish(self.retry(delivery_id, owner, delay=delay, reason=reason, attempt=attempt))

    async def mark_dead(
        self, delivery_id: int, owner: str, *, reason: str, attempt: AttemptResult | None = None
    ) -> bool:
        """Finish as dead (kept for inspection and replay); False if the lease was lost."""
        return await self._finish(self.dead(delivery_id, owner, reason=reason, attempt=attempt))
