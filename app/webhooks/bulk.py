"""Many intakes, claims or outcomes in one transaction: the statements group commit runs.

Each function works inside the caller's transaction (``DeliveryStore``'s) and
answers per item, in the order given, so ``GroupCommit`` can hand each waiter
its own answer. They are plain (synchronous) SQLAlchemy Core, so that one
transaction is one call: on SQLite all of it runs in one worker thread, on
PostgreSQL under ``AsyncConnection.run_sync`` (each statement awaits asyncpg).
Rows go in with executemany / multi-row ``INSERT .. RETURNING`` (SQLAlchemy's
"insertmanyvalues"), so a batch of 500 costs a handful of round trips and one
fsync. RETURNING rows come in no guaranteed order (and SQLite cannot batch an
ordered one), so each is matched back by a value unique in its statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, tuple_, union_all, update
from sqlalchemy.engine import Connection

from app.webhooks.database import StoreUnavailable
from app.webhooks.records import Claim, ClaimedDelivery, Delivery, Finish, NewEvent, RecordedEvent
from app.webhooks.tables import Timestamp, attempts, deliveries, events

Write = NewEvent | Claim | Finish  # what ``write_batch`` takes
_MICROSECOND = timedelta(microseconds=1)
# Deliveries finished at once share one UPDATE per set of columns; these are the columns an outcome may set.
_FINISH_COLUMNS = ("status", "next_attempt_at", "last_error", "last_status", "attempts")

# The dispatcher's statements are built once, their values bound per call (an expanding IN takes
# any number of ids): built per batch, coercing their clauses and computing their cache keys cost
# about a tenth of the delivery phase's CPU.
_NOW = bindparam("now", type_=Timestamp())
_CLAIMABLE = or_(
    deliveries.c.status == "pending",
    and_(deliveries.c.status == "delivering", deliveries.c.lease_expires_at <= _NOW),
)
_LEASE = update(deliveries).values(
    status="delivering",
    lease_owner=bindparam("owner"),
    lease_expires_at=bindparam("expires", type_=Timestamp()),
    attempts=deliveries.c.attempts + 1,
    updated_at=_NOW,
)


def _lease_due_statement(excluding: bool) -> Any:
    """Lease the oldest due deliveries: the oldest pending ones that are due and the oldest whose lease
    expired, each found through its index (``ix_webhook_deliveries_due``, ``..._lease``) and merged.
    One WHERE with both cases (an OR) cannot be read in index order: both databases then gathered and
    sorted every due row on each claim (SQLite a temporary B-tree, PostgreSQL a sequential scan), so
    draining a backlog of n rows cost O(n) per claim of at most ``limit``. (PostgreSQL reads the
    pending ones in index order once its statistics know of the backlog; until autovacuum's next
    ANALYZE it may still sort them.)"""

    def oldest(condition: Any) -> Any:
        if excluding:
            busy: Any = bindparam("busy", expanding=True)
            condition = and_(condition, tuple_(deliveries.c.endpoint, deliveries.c.target).not_in(busy))
        # By next_attempt_at alone, which the index holds in order (SQLite breaks ties by id, the
        # rowid every index ends with); adding id would make PostgreSQL sort all rows due at one
        # instant, as a replay of many makes them.
        return (
            select(deliveries.c.id, deliveries.c.next_attempt_at)
            .where(condition)
            .order_by(deliveries.c.next_attempt_at)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)
            .subquery()
        )

    pending = oldest(and_(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= _NOW))
    expired = oldest(and_(deliveries.c.status == "delivering", deliveries.c.lease_expires_at <= _NOW))
    due = union_all(select(pending.c.id, pending.c.next_attempt_at), select(expired.c.id, expired.c.next_attempt_at))
    due_rows = due.subquery()
    picked = select(due_rows.c.id).order_by(due_rows.c.next_attempt_at, due_rows.c.id).limit(bindparam("limit"))
    return _LEASE.where(deliveries.c.id.in_(picked.scalar_subquery())).returning(deliveries.c.id)


_LEASE_DUE = {excluding: _lease_due_statement(excluding) for excluding in (False, True)}
_LEASE_CLAIMABLE = _LEASE.where(deliveries.c.id.in_(bindparam("ids", expanding=True)), _CLAIMABLE).returning(
    deliveries.c.id
)
# Columns by position, read as a plain tuple: Row attribute lookups cost more than the row itself.
_CLAIMED_COLUMNS = (*deliveries.c, events.c.provider_event_id, events.c.headers, events.c.body)
_DELIVERY_FIELDS = len(deliveries.c)
_LOAD_CLAIMED = (
    select(*_CLAIMED_COLUMNS)
    .join_from(deliveries, events, events.c.id == deliveries.c.event_id)
    .where(deliveries.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
)
_INSERT_ATTEMPTS = insert(attempts)
_HELD = (
    select(deliveries.c.id, deliveries.c.lease_owner)
    .where(deliveries.c.id.in_(bindparam("ids", expanding=True)), deliveries.c.status == "delivering")
    .with_for_update()
)
_FINISH: dict[tuple[str, ...], Any] = {}  # by the columns an outcome sets: a handful of shapes
if tuple(c.name for c in deliveries.c) != tuple(f.name for f in fields(Delivery))[:_DELIVERY_FIELDS]:
    raise RuntimeError("load_claimed reads Delivery's fields by position: keep them in the table's order")


def write_batch(conn: Connection, insert_fn: Any, batch: Sequence[Write], now: datetime) -> list[object]:
    """Intakes, claims and outcomes in the caller's transaction, answered in order (group commit).

    Outcomes go first and claims last, so a claim finds the deliveries of this batch's intakes.
    """
    answers: list[object] = [None] * len(batch)
    finishes = [(i, w) for i, w in enumerate(batch) if isinstance(w, Finish)]
    intakes = [(i, w) for i, w in enumerate(batch) if isinstance(w, NewEvent)]
    claims: dict[tuple[str, float], list[tuple[int, Claim]]] = {}
    for i, w in enumerate(batch):
        if isinstance(w, Claim):
            claims.setdefault((w.owner, w.lease_seconds), []).append((i, w))
    if finishes:
        kept = finish_deliveries(conn, [w for _, w in finishes], now)
        for (i, _), ok in zip(finishes, kept, strict=True):
            answers[i] = ok
    if intakes:
        recorded = insert_events(conn, insert_fn, [w for _, w in intakes], now)
        for (i, _), answer in zip(intakes, recorded, strict=True):
            answers[i] = answer
    for (owner, lease_seconds), group in claims.items():
        params = _lease_params(owner, lease_seconds, now) | {"ids": sorted({w.delivery_id for _, w in group})}
        by_id = {c.delivery.id: c for c in load_claimed(conn, _lease(conn, _LEASE_CLAIMABLE, params))}
        for i, w in group:
            answers[i] = by_id.pop(w.delivery_id, None)
    return answers


def lease_due(
    conn: Connection,
    owner: str,
    lease_seconds: float,
    limit: int,
    now: datetime,
    exclude: Sequence[tuple[str, str]] = (),
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries (oldest first), skipping rows locked by others and the
    (endpoint, target) pairs in ``exclude``.

    Due: pending with ``next_attempt_at`` reached, or delivering with an expired lease.
    """
    params = _lease_params(owner, lease_seconds, now) | {"limit": limit}
    if exclude:
        params["busy"] = list(exclude)
    return load_claimed(conn, _lease(conn, _LEASE_DUE[bool(exclude)], params))


def insert_events(conn: Connection, insert_fn: Any, batch: Sequence[NewEvent], now: datetime) -> list[RecordedEvent]:
    """Store each new event with its deliveries (leased at once for an event with a ``lease``); a
    repeat of a provider event id (already stored, earlier in this batch, or committed meanwhile
    by another process) stores nothing and names the first event. ``insert_fn`` is the dialect's
    ``insert`` (it has ON CONFLICT).
    """
    fresh: list[int] = []  # positions in batch of the events to insert
    first_of: dict[tuple[str, str | None], int] = {}  # key -> position of its first copy in this batch
    for position, event in enumerate(batch):
        key = (event.endpoint, event.provider_event_id)
        if event.provider_event_id is None or key not in first_of:
            fresh.append(position)
            if event.provider_event_id is not None:
                first_of[key] = position

    # The events of one batch are received one microsecond apart, in arrival order: each row's
    # received_at is unique in its statement, so RETURNING (in no guaranteed order) maps back by it.
    def row(p: int) -> dict[str, Any]:
        event = batch[p]
        headers = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in event.headers]
        return {
            "endpoint": event.endpoint,
            "provider_event_id": event.provider_event_id,
            "event_type": event.event_type,
            "received_at": now + p * _MICROSECOND,
            "headers": headers,
            "body": event.body,
        }

    position_at = {now + p * _MICROSECOND: p for p in fresh}
    event_ids: dict[int, int] = {}
    known: dict[tuple[str, str | None], int] = {}  # repeats of events stored before this batch
    anonymous = [p for p in fresh if batch[p].provider_event_id is None]
    if anonymous:  # never a repeat
        rows = conn.execute(insert(events).returning(events.c.id, events.c.received_at), [row(p) for p in anonymous])
        event_ids.update((position_at[r.received_at], int(r.id)) for r in rows)
    if first_of:  # a repeat of a stored event is skipped by the index, then looked up (rare: no lookup first)
        rows = conn.execute(
            insert_fn(events)
            .on_conflict_do_nothing(index_elements=["endpoint", "provider_event_id"])
            .returning(events.c.id, events.c.received_at),
            [row(p) for p in first_of.values()],
        )
        event_ids.update((position_at[r.received_at], int(r.id)) for r in rows)
        repeated = {key for key, p in first_of.items() if p not in event_ids}
        if repeated:
            known = _event_ids(conn, repeated)
            for key in repeated:
                if key not in known:  # the first copy was pruned between the two statements
                    raise StoreUnavailable("webhook store: duplicate event vanished; retry")
                del first_of[key]
    fresh = [p for p in fresh if p in event_ids]
    delivered_to = _insert_deliveries(conn, [(event_ids[p], batch[p]) for p in fresh], now)
    answers = []
    for position, event in enumerate(batch):
        if position in event_ids:
            claimed = delivered_to[event_ids[position]]
            ids = tuple(c.delivery.id for c in claimed)
            answers.append(RecordedEvent(event_ids[position], False, ids, tuple(claimed) if event.lease else ()))
        else:
            key = (event.endpoint, event.provider_event_id)
            first = known[key] if key in known else event_ids[first_of[key]]
            answers.append(RecordedEvent(first, True, ()))
    return answers


def _insert_deliveries(
    conn: Connection, stored: Sequence[tuple[int, NewEvent]], now: datetime
) -> dict[int, list[ClaimedDelivery]]:
    """One delivery per target of each stored event, by event id, in the order of its targets:
    pending, or leased with its first attempt counted when the event has a ``lease``."""
    params = []
    of: list[tuple[int, NewEvent, str]] = []  # each row's event id, event and target
    for event_id, event in stored:
        lease = event.lease
        for target in event.targets:
            of.append((event_id, event, target))
            params.append(
                {
                    "event_id": event_id,
                    "endpoint": event.endpoint,
                    "target": target,
                    "status": "delivering" if lease else "pending",
                    "attempts": 1 if lease else 0,
                    "lease_owner": lease.owner if lease else None,
                    "lease_expires_at": now + timedelta(seconds=lease.seconds) if lease else None,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    answer: dict[int, list[ClaimedDelivery]] = {event_id: [] for event_id, _ in stored}
    if not params:
        return answer
    rows = conn.execute(
        insert(deliveries).returning(deliveries.c.id, deliveries.c.event_id, deliveries.c.target), params
    )
    id_of = {(int(r.event_id), r.target): int(r.id) for r in rows}
    for event_id, event, target in of:
        lease = event.lease
        delivery = Delivery(
            id=id_of[(event_id, target)],
            event_id=event_id,
            endpoint=event.endpoint,
            target=target,
            status="delivering" if lease else "pending",
            attempts=1 if lease else 0,
            next_attempt_at=now,
            lease_owner=lease.owner if lease else None,
            lease_expires_at=now + timedelta(seconds=lease.seconds) if lease else None,
            last_status=None,
            last_error=None,
            created_at=now,
            updated_at=now,
            provider_event_id=event.provider_event_id,
            event_type=event.event_type,
        )
        answer[event_id].append(ClaimedDelivery(delivery, event.provider_event_id, event.headers, event.body))
    return answer


def _event_ids(conn: Connection, keys: set[tuple[str, str | None]]) -> dict[tuple[str, str | None], int]:
    rows = conn.execute(
        select(events.c.id, events.c.endpoint, events.c.provider_event_id).where(
            tuple_(events.c.endpoint, events.c.provider_event_id).in_(sorted(keys))
        )
    )
    return {(r.endpoint, r.provider_event_id): int(r.id) for r in rows}


def _lease_params(owner: str, lease_seconds: float, now: datetime) -> dict[str, Any]:
    return {"owner": owner, "expires": now + timedelta(seconds=lease_seconds), "now": now}


def _lease(conn: Connection, statement: Any, params: dict[str, Any]) -> list[int]:
    """Lease the deliveries ``statement`` selects to its owner, counting the attempt; returns their ids."""
    return [int(row_id) for row_id in conn.execute(statement, params).scalars()]


def load_claimed(conn: Connection, ids: Sequence[int]) -> list[ClaimedDelivery]:
    if not ids:
        return []
    fields = _DELIVERY_FIELDS
    claimed = []
    for row in conn.execute(_LOAD_CLAIMED, {"ids": ids}):
        provider_event_id, headers, body = row[fields:]
        delivery = Delivery(*row[: fields + 1])  # its columns, then provider_event_id
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        claimed.append(ClaimedDelivery(delivery, provider_event_id, raw, body))
    return claimed


def finish_deliveries(conn: Connection, batch: Sequence[Finish], now: datetime) -> list[bool]:
    """Record each attempt and apply each outcome whose owner still holds the lease; True where it did."""
    recorded = [f for f in batch if f.attempt is not None]
    if recorded:
        conn.execute(
            _INSERT_ATTEMPTS,
            [
                {
                    "delivery_id": f.delivery_id,
                    "started_at": f.attempt.started_at,
                    "duration_ms": f.attempt.duration_ms,
                    "status_code": f.attempt.status_code,
                    "error": f.attempt.error,
                }
                for f in recorded
                if f.attempt is not None
            ],
        )
    # Which of them this owner still holds: the rows are locked (FOR UPDATE on Postgres; SQLite's
    # BEGIN IMMEDIATE already holds the write lock), so the answer stays true until commit.
    held_rows = conn.execute(_HELD, {"ids": sorted({f.delivery_id for f in batch})})
    held = {(int(row_id), owner) for row_id, owner in held_rows}
    kept = [(f.delivery_id, f.owner) in held for f in batch]
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for finish, ok in zip(batch, kept, strict=True):
        if not ok:
            continue
        values = dict(finish.values)
        if finish.attempt is not None:
            values["last_status"] = finish.attempt.status_code
        columns = tuple(sorted(values))
        updates.setdefault(columns, []).append({"b_id": finish.delivery_id, **{f"b_{c}": values[c] for c in columns}})
    for columns, params in updates.items():
        for row in params:
            row["b_now"] = now
        conn.execute(_finish_statement(columns), params)
    return kept


def _finish_statement(columns: tuple[str, ...]) -> Any:
    statement = _FINISH.get(columns)
    if statement is None:
        if not set(columns) <= set(_FINISH_COLUMNS):
            raise ValueError(f"an outcome may set {_FINISH_COLUMNS}, not {columns}")
        statement = _FINISH[columns] = (
            update(deliveries)
            .where(deliveries.c.id == bindparam("b_id"))
            .values(
                lease_owner=None,
                lease_expires_at=None,
                updated_at=bindparam("b_now", type_=Timestamp()),
                **{c: bindparam(f"b_{c}", type_=deliveries.c[c].type) for c in columns},
            )
        )
    return statement
