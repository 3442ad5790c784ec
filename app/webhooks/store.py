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

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Self, TypeVar, cast

import anyio
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from app.webhooks.bulk import Write, lease_due, write_batch
from app.webhooks.database import (
    StoreError,
    StoreUnavailable,
    create_sqlite_writer,
    create_store_engine,
    translate_errors,
    utc_now,
)
from app.webhooks.migrations import migrate
from app.webhooks.queries import Clock, DeliveryQueries
from app.webhooks.records import AttemptResult, Claim, ClaimedDelivery, Finish, NewEvent, RecordedEvent

__all__ = ["DeliveryStore", "StoreError", "StoreUnavailable"]

RawHeaders = Sequence[tuple[bytes, bytes]]
T = TypeVar("T")


class DeliveryStore(DeliveryQueries):
    """Durable events and deliveries; see the module docstring for the life of a delivery."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Clock = utc_now,
        sqlite_writer: Engine | None = None,
        busy_timeout_ms: int = 5000,
    ) -> None:
        """``sqlite_writer`` (SQLite): ``create_sqlite_writer``'s engine on the same file, for ``_write``."""
        super().__init__(engine, clock=clock)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._sqlite_writer = sqlite_writer
        self._waits = anyio.CapacityLimiter(1)  # the worker thread _write waits in
        self._busy_timeout_ms = busy_timeout_ms

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
        sqlite_writer = create_sqlite_writer(url, busy_timeout_ms) if engine.dialect.name == "sqlite" else None
        store = cls(engine, clock=clock, sqlite_writer=sqlite_writer, busy_timeout_ms=busy_timeout_ms)
        try:
            async with store._transaction() as conn:
                await migrate(conn, schema=schema)
        except BaseException:
            await store.aclose()
            raise
        return store

    async def aclose(self) -> None:
        await super().aclose()
        if self._sqlite_writer is not None:
            self._sqlite_writer.dispose()  # closes its one SQLite connection: no I/O to wait for

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
        """Intakes, claims and outcomes in one transaction, answered in order (group commit)."""
        if not batch:
            return []
        return await self._write(write_batch, self._insert, batch, self._clock())

    async def _write(self, statements: Callable[..., T], *args: Any) -> T:
        """``statements(conn, *args)`` in one transaction, shielded like ``_transaction``.

        SQLite (see ``create_sqlite_writer``): ``BEGIN IMMEDIATE`` and ``COMMIT`` wait in a worker
        thread, the statements run on the event loop; this process's transactions queue on one lock.
        """
        if self._sqlite_writer is None:
            async with self._transaction() as conn:
                return await conn.run_sync(statements, *args)
        with anyio.CancelScope(shield=True), translate_errors():
            async with self._writer:
                with self._sqlite_writer.connect() as conn:
                    await self._begin_immediate(conn)
                    answer = statements(conn, *args)
                    await anyio.to_thread.run_sync(conn.exec_driver_sql, "COMMIT", limiter=self._waits)
                    conn.commit()  # SQLAlchemy's bookkeeping: the DBAPI connection has no transaction left
        return answer

    async def _begin_immediate(self, conn: Connection) -> None:
        """Take SQLite's write lock: at once on the loop when it is free (the writer connection's
        busy timeout is 0), else waiting up to the store's busy timeout in a worker thread."""
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except sa_exc.OperationalError as exc:
            if "locked" not in str(exc.orig):
                raise
        conn.rollback()  # SQLAlchemy's bookkeeping only: SQLite began nothing

        def wait() -> None:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                conn.exec_driver_sql("PRAGMA busy_timeout=0")

        await anyio.to_thread.run_sync(wait, limiter=self._waits)

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
        return await self._write(lease_due, owner, lease_seconds, limit, self._clock(), exclude)

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
