"""DeliveryStore against real databases: a SQLite file in tmp_path and the local PostgreSQL.

Every test runs on both backends (``backend``, ``database`` and ``open_store`` in conftest.py).
Migrations have their own file, test_webhook_migrations.py.
"""

import asyncio
import json
import random
import sqlite3
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import anyio
import asyncpg
import pytest
from sqlalchemy import event, insert

from app.webhooks.bulk import lease_due
from app.webhooks.database import StoreUnavailable, create_sqlite_writer, utc_now
from app.webhooks.migrations import current_revisions, head_revision
from app.webhooks.records import AttemptResult, Claim, Lease, NewEvent, ReplayResult
from app.webhooks.store import DeliveryStore
from tests.webhooks import START

pytestmark = pytest.mark.anyio

LEASE = 60.0


@pytest.fixture
async def store(open_store) -> DeliveryStore:
    return await open_store()


HEADERS = [(b"content-type", b"application/json"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
BODY = b'{"id": "evt_1"}\xff\x00 raw bytes'


async def record(store, provider_id="evt_1", endpoint="github", targets=("orders", "audit")):
    return await store.record_event(endpoint, provider_id, HEADERS, BODY, list(targets))


def ok(clock, status=200) -> AttemptResult:
    return AttemptResult(started_at=clock(), duration_ms=12, status_code=status)


# --- intake --------------------------------------------------------------------


async def test_record_event_commits_event_and_one_pending_delivery_per_target(store, clock):
    recorded = await record(store)
    assert recorded.duplicate is False
    assert len(recorded.delivery_ids) == 2
    event = await store.get_event(recorded.event_id)
    assert event.headers == HEADERS
    assert event.body == BODY
    assert event.received_at == START
    assert event.provider_event_id == "evt_1"
    rows = await store.list_deliveries(endpoint="github")
    assert sorted(d.target for d in rows) == ["audit", "orders"]
    for delivery in rows:
        assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("pending", 0, clock())
        assert delivery.event_id == recorded.event_id


async def test_repeated_provider_event_id_is_a_duplicate_without_new_deliveries(store):
    first = await record(store)
    again = await store.record_event("github", "evt_1", [], b"other body", ["orders"])
    assert again.event_id == first.event_id
    assert again.duplicate is True
    assert again.delivery_ids == ()
    assert len(await store.list_deliveries()) == 2
    assert (await store.get_event(first.event_id)).body == BODY


async def test_write_many_answers_each_write_in_order_in_one_transaction(store, clock):
    """Group commit: intakes (with repeats inside the batch and of stored events), claims and
    outcomes in one call, each answered as its own call would be."""
    stored = await record(store, "evt_old", targets=("a",))
    claimed = await store.claim_one(stored.delivery_ids[0], "w", LEASE)
    clock.advance(1)
    batch = [
        NewEvent("github", None, HEADERS, b"anonymous 1", ("a", "b")),
        NewEvent("github", "evt_new", HEADERS, b"first copy", ("a", "b", "c")),
        NewEvent("github", "evt_old", HEADERS, b"repeat of a stored event", ("a",)),
        store.delivered(claimed.delivery.id, "w", ok(clock, 204)),
        NewEvent("github", "evt_new", HEADERS, b"repeat within the batch", ("a",)),
        NewEvent("github", None, HEADERS, b"anonymous 2", ("a",)),
        store.delivered(claimed.delivery.id, "someone else"),
    ]
    answers = await store.write_many(batch)
    anonymous_1, new, old, finished, repeat, anonymous_2, not_held = answers
    assert (old.event_id, old.duplicate) == (stored.event_id, True)
    assert (repeat.event_id, repeat.duplicate, repeat.delivery_ids) == (new.event_id, True, ())
    assert finished is True and not_held is False
    for answer, body, targets in [
        (anonymous_1, b"anonymous 1", ["a", "b"]),
        (new, b"first copy", ["a", "b", "c"]),
        (anonymous_2, b"anonymous 2", ["a"]),
    ]:
        assert answer.duplicate is False
        assert (await store.get_event(answer.event_id)).body == body
        deliveries = [(await store.get_delivery_with_attempts(i))[0] for i in answer.delivery_ids]
        assert [d.target for d in deliveries] == targets
        assert {d.event_id for d in deliveries} == {answer.event_id}
    assert len({anonymous_1.event_id, new.event_id, anonymous_2.event_id, stored.event_id}) == 4
    # Within a batch, received_at keeps arrival order.
    events = sorted(await store.list_events(limit=10), key=lambda e: e.received_at)
    assert [e.id for e in events] == [stored.event_id, anonymous_1.event_id, new.event_id, anonymous_2.event_id]
    delivery, attempts = await store.get_delivery_with_attempts(claimed.delivery.id)
    assert (delivery.status, delivery.last_status, len(attempts)) == ("delivered", 204, 1)


async def test_write_many_claims_after_this_batchs_intakes(store):
    first = await record(store, "evt_a", targets=("a",))
    answers = await store.write_many(
        [Claim(first.delivery_ids[0], "w", LEASE), Claim(999_999, "w", LEASE), Claim(first.delivery_ids[0], "x", LEASE)]
    )
    assert answers[0].delivery.lease_owner == "w"
    assert answers[1] is None
    assert answers[2] is None  # already leased to w in this very transaction


async def test_same_provider_id_on_another_endpoint_is_not_a_duplicate(store):
    first = await record(store, endpoint="github")
    other = await record(store, endpoint="stripe")
    assert other.duplicate is False and other.event_id != first.event_id


async def test_events_without_provider_id_are_never_duplicates(store):
    one = await record(store, provider_id=None)
    two = await record(store, provider_id=None)
    assert not one.duplicate and not two.duplicate and one.event_id != two.event_id


async def test_event_with_no_targets_is_still_recorded(store):
    recorded = await record(store, targets=())
    assert recorded.delivery_ids == ()
    assert (await store.get_event(recorded.event_id)) is not None


# --- claiming --------------------------------------------------------------------


async def test_claim_due_leases_due_deliveries_with_their_event(store, clock):
    recorded = await record(store)
    claimed = await store.claim_due("worker-a", LEASE, 10)
    assert {c.delivery.id for c in claimed} == set(recorded.delivery_ids)
    for c in claimed:
        assert c.delivery.status == "delivering"
        assert c.delivery.lease_owner == "worker-a"
        assert c.delivery.lease_expires_at == clock() + timedelta(seconds=LEASE)
        assert c.delivery.attempts == 1
        assert (c.headers, c.body, c.provider_event_id) == (HEADERS, BODY, "evt_1")
    assert await store.claim_due("worker-b", LEASE, 10) == []


async def test_claim_due_respects_limit_oldest_first(store, clock):
    ids = []
    for n in range(5):
        ids += (await record(store, provider_id=f"evt_{n}", targets=["orders"])).delivery_ids
        clock.advance(1)
    first = await store.claim_due("w", LEASE, 2)
    assert [c.delivery.id for c in first] == ids[:2]
    rest = await store.claim_due("w", LEASE, 10)
    assert [c.delivery.id for c in rest] == ids[2:]


async def test_claim_due_takes_the_oldest_of_pending_and_expired_leases_together(store, clock):
    # Due pending deliveries and expired leases are found separately (each in index order) and merged:
    # the claim still takes the oldest of both, by next_attempt_at, up to the limit.
    ids = []
    for n in range(6):
        ids += (await record(store, provider_id=f"evt_{n}", targets=["orders"])).delivery_ids
        clock.advance(1)
    crashed = await store.claim_due("crashed", LEASE, 3)  # the three oldest, leased by a process that dies
    assert [c.delivery.id for c in crashed] == ids[:3]
    clock.advance(LEASE)
    for n in range(6, 8):  # due after the leased ones' next_attempt_at
        ids += (await record(store, provider_id=f"evt_{n}", targets=["orders"])).delivery_ids
    first = await store.claim_due("survivor", LEASE, 4)
    assert [c.delivery.id for c in first] == ids[:4]  # three expired leases, then the oldest pending one
    assert [c.delivery.attempts for c in first] == [2, 2, 2, 1]
    rest = await store.claim_due("survivor", LEASE, 10)
    assert [c.delivery.id for c in rest] == ids[4:]


@pytest.mark.parametrize("backend", ["sqlite"])  # SQLite counts the steps of its virtual machine
async def test_claiming_from_a_backlog_costs_the_same_whatever_its_size(store, database, clock):
    # One WHERE for pending and expired leases (an OR) made SQLite gather and sort every due row on
    # each claim: draining a backlog cost O(n) per claim. Each claim now reads its rows in index order.
    url, _ = database
    writer = create_sqlite_writer(url)

    def steps_of_a_claim() -> int:
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0  # go on

        with writer.connect() as conn:
            conn.connection.dbapi_connection.set_progress_handler(count, 100)
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            assert len(lease_due(conn, "w", LEASE, 10, clock())) == 10
            conn.rollback()  # the backlog stays as it was
        return steps

    async def add(n: int) -> None:
        events = [NewEvent("github", None, [], b"{}", ("orders",)) for _ in range(n)]
        for start in range(0, n, 500):
            await store.write_many(events[start : start + 500])

    try:
        await add(200)
        small = steps_of_a_claim()
        await add(5000)
        large = steps_of_a_claim()
    finally:
        writer.dispose()
    assert large < small * 2, (small, large)


async def test_retry_is_not_claimed_before_it_is_due(store, clock):
    (delivery_id,) = (await record(store, targets=["orders"])).delivery_ids
    (claimed,) = await store.claim_due("w", LEASE, 10)
    assert await store.schedule_retry(delivery_id, "w", delay=300, reason="HTTP 500", attempt=ok(clock, 500))
    clock.advance(299)
    assert await store.claim_due("w", LEASE, 10) == []
    clock.advance(1)
    (again,) = await store.claim_due("w", LEASE, 10)
    assert again.delivery.id == claimed.delivery.id
    assert again.delivery.attempts == 2


async def test_expired_lease_is_reclaimed_and_the_old_owner_is_fenced_off(store, clock):
    (delivery_id,) = (await record(store, targets=["orders"])).delivery_ids
    await store.claim_due("crashed", LEASE, 10)
    clock.advance(LEASE - 1)
    assert await store.claim_due("survivor", LEASE, 10) == []
    clock.advance(1)
    (reclaimed,) = await store.claim_due("survivor", LEASE, 10)
    assert reclaimed.delivery.lease_owner == "survivor"
    assert reclaimed.delivery.attempts == 2
    assert await store.mark_delivered(delivery_id, "crashed", ok(clock)) is False
    assert await store.mark_delivered(delivery_id, "survivor", ok(clock)) is True
    delivery, attempts = await store.get_delivery_with_attempts(delivery_id)
    assert delivery.status == "delivered"
    assert len(attempts) == 2  # both attempts happened, so both are logged


async def test_claim_one_takes_a_pending_delivery_at_once(store, clock):
    (delivery_id,) = (await record(store, targets=["orders"])).delivery_ids
    await store.claim_due("w", LEASE, 10)
    await store.schedule_retry(delivery_id, "w", delay=3600, reason="HTTP 502")
    claimed = await store.claim_one(delivery_id, "intake", LEASE)
    assert claimed is not None
    assert claimed.delivery.lease_owner == "intake"
    assert claimed.body == BODY
    assert await store.claim_one(delivery_id, "other", LEASE) is None
    clock.advance(LEASE)
    assert (await store.claim_one(delivery_id, "other", LEASE)).delivery.lease_owner == "other"


async def test_an_event_stored_with_a_lease_has_its_deliveries_leased_at_once(store, clock):
    # Intake with free attempt slots: the deliveries are committed already leased, first attempt counted.
    new = NewEvent(
        "github", "evt-leased", [(b"x-kind", b"push")], BODY, ("orders", "audit"), "push", Lease("me", LEASE)
    )
    (recorded,) = await store.write_many([new])
    assert [c.delivery.id for c in recorded.claimed] == list(recorded.delivery_ids)
    for claimed in recorded.claimed:
        assert (claimed.delivery.status, claimed.delivery.attempts, claimed.delivery.lease_owner) == (
            "delivering",
            1,
            "me",
        )
        assert (claimed.body, claimed.headers, claimed.provider_event_id) == (
            BODY,
            [(b"x-kind", b"push")],
            "evt-leased",
        )
        stored, _ = await store.get_delivery_with_attempts(claimed.delivery.id)
        assert (stored.status, stored.attempts, stored.lease_owner) == ("delivering", 1, "me")
    assert await store.claim_due("other", LEASE, 10) == []  # held: nobody else attempts them
    assert await store.mark_delivered(recorded.delivery_ids[0], "me", ok(clock)) is True
    clock.advance(LEASE)  # the holder died: the other one is free again
    (taken,) = await store.claim_due("other", LEASE, 10)
    assert (taken.delivery.id, taken.delivery.attempts) == (recorded.delivery_ids[1], 2)
    # A repeat asks for a lease too, but gets no deliveries.
    (repeat,) = await store.write_many([new])
    assert (repeat.duplicate, repeat.claimed, repeat.event_id) == (True, (), recorded.event_id)


async def test_claim_one_refuses_finished_and_missing_deliveries(store, clock):
    (delivery_id,) = (await record(store, targets=["orders"])).delivery_ids
    await store.claim_one(delivery_id, "w", LEASE)
    await store.mark_delivered(delivery_id, "w", ok(clock))
    assert await store.claim_one(delivery_id, "w", LEASE) is None
    assert await store.claim_one(999_999, "w", LEASE) is None


# --- finishing -------------------------------------------------------------------


async def test_mark_delivered_logs_the_attempt_and_clears_the_lease(store, clock):
    (delivery_id,) = (await record(store, targets=["orders"])).delivery_ids
    await store.claim_one(delivery_id, "w", LEASE)
    clock.advance(2)
    assert await store.mark_delivered(delivery_id, "w", ok(clock, 204))
    delivery, attempts = await store.get_delivery_with_attempts(delivery_id)
    assert (delivery.status, delivery.last_status, delivery.lease_owner, delivery.next_attempt_at) == (
        "delivered",
        204,
        None,
        None,
    )
    assert delivery.updated_at == clock()
    assert [(a.status_code, a.duration_ms, a.started_at) for a in attempts] == [(204, 12, clock())]


async def test_schedule_retry_sets_next_attempt_and_last_error(store, clock):
    (delivery_id,) = (await record(store, targets=["orders"])).delivery_ids
    await store.claim_one(delivery_id, "w", LEASE)
    attempt = AttemptResult(started_at=clock(), duration_ms=5000, error="read timeout")
    assert await store.schedule_retry(delivery_id, "w", delay=5, reason="read timeout", attempt=attempt)
    delivery, attempts = await store.get_delivery_with_attempts(delivery_id)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("pending", 1, "read timeout")
    assert delivery.next_attempt_at == clock() + timedelta(seconds=5)
    assert delivery.last_status is None
    assert attempts[0].error == "read timeout"


async def test_mark_dead_then_replay_starts_the_schedule_over(store, clock):
    (delivery_id,) = (await record(store, targets=["orders"])).delivery_ids
    await store.claim_one(delivery_id, "w", LEASE)
    assert await store.mark_dead(delivery_id, "w", reason="HTTP 410 Gone", attempt=ok(clock, 410))
    (dead,) = await store.list_deliveries(status="dead")
    assert (dead.id, dead.last_status, dead.last_error) == (delivery_id, 410, "HTTP 410 Gone")
    assert await store.claim_due("w", LEASE, 10) == []
    clock.advance(10)
    assert await store.replay(delivery_id) is ReplayResult.REPLAYED
    (replayed,) = await store.list_deliveries(status="pending")
    assert (replayed.attempts, replayed.next_attempt_at) == (0, clock())
    assert len(await store.claim_due("w", LEASE, 10)) == 1


async def test_replay_refuses_in_flight_and_unknown_deliveries(store, clock):
    (delivery_id,) = (await record(store, targets=["orders"])).delivery_ids
    await store.claim_one(delivery_id, "w", LEASE)
    assert await store.replay(delivery_id) is ReplayResult.IN_FLIGHT
    assert await store.replay(424242) is ReplayResult.NOT_FOUND
    await store.mark_delivered(delivery_id, "w", ok(clock))
    assert await store.replay(delivery_id) is ReplayResult.REPLAYED


async def test_replay_dead_by_endpoint(store):
    for endpoint in ("github", "github", "stripe"):
        recorded = await record(store, endpoint=endpoint, provider_id=None, targets=["t"])
        (delivery_id,) = recorded.delivery_ids
        await store.claim_one(delivery_id, "w", LEASE)
        await store.mark_dead(delivery_id, "w", reason="gave up")
    assert await store.replay_dead("github") == 2
    assert {d.endpoint for d in await store.list_deliveries(status="dead")} == {"stripe"}
    assert await store.replay_dead() == 1
    assert await store.list_deliveries(status="dead") == []


# --- listing, pruning, metrics -----------------------------------------------------


async def test_list_events_newest_first_with_filter_and_pages(store, clock):
    for n in range(5):
        await record(store, provider_id=f"e{n}", endpoint="github" if n % 2 == 0 else "stripe")
        clock.advance(1)
    listed = await store.list_events()
    assert [e.provider_event_id for e in listed] == ["e4", "e3", "e2", "e1", "e0"]
    assert listed[0].body_size == len(BODY)
    assert [e.provider_event_id for e in await store.list_events(endpoint="github")] == ["e4", "e2", "e0"]
    page = await store.list_events(limit=2)
    after = await store.list_events(limit=2, before_id=page[-1].id)
    assert [e.provider_event_id for e in page + after] == ["e4", "e3", "e2", "e1"]


async def test_list_deliveries_filters_and_pages(store, clock):
    recorded = await record(store, targets=["a", "b", "c"])
    await store.claim_one(recorded.delivery_ids[0], "w", LEASE)
    await store.mark_delivered(recorded.delivery_ids[0], "w", ok(clock))
    assert [d.target for d in await store.list_deliveries(status="pending")] == ["c", "b"]
    assert [d.target for d in await store.list_deliveries(status="delivered")] == ["a"]
    assert await store.list_deliveries(endpoint="nope") == []
    page = await store.list_deliveries(limit=1)
    assert [d.target for d in await store.list_deliveries(before_id=page[0].id)] == ["b", "a"]
    assert await store.get_delivery_with_attempts(999_999) is None


async def test_prune_delivered_keeps_dead_and_recent_and_forgets_old_ids(store, clock):
    old = await record(store, provider_id="old", targets=["orders"])
    mixed = await record(store, provider_id="mixed", targets=["orders", "audit"])
    for delivery_id in (*old.delivery_ids, mixed.delivery_ids[0]):
        await store.claim_one(delivery_id, "w", LEASE)
        await store.mark_delivered(delivery_id, "w", ok(clock))
    await store.claim_one(mixed.delivery_ids[1], "w", LEASE)
    await store.mark_dead(mixed.delivery_ids[1], "w", reason="gave up")
    clock.advance(86400)
    recent = await record(store, provider_id="recent", targets=["orders"])
    await store.claim_one(recent.delivery_ids[0], "w", LEASE)
    await store.mark_delivered(recent.delivery_ids[0], "w", ok(clock))

    assert await store.prune_delivered(clock() - timedelta(hours=1)) == 2
    assert await store.get_event(old.event_id) is None
    assert await store.get_delivery_with_attempts(old.delivery_ids[0]) is None
    assert await store.get_event(mixed.event_id) is not None
    assert [d.status for d in await store.list_deliveries(endpoint="github")] == ["delivered", "dead"]
    assert (await record(store, provider_id="old")).duplicate is False
    assert (await record(store, provider_id="recent")).duplicate is True


async def test_count_due_and_oldest_due_age(store, clock):
    assert await store.count_due() == 0
    assert await store.oldest_due_age() is None
    first = await record(store, provider_id="a", targets=["orders"])
    clock.advance(30)
    await record(store, provider_id="b", targets=["orders"])
    clock.advance(10)
    assert await store.count_due() == 2
    assert await store.oldest_due_age() == 40.0
    await store.claim_one(first.delivery_ids[0], "w", LEASE)
    assert await store.count_due() == 1
    assert await store.oldest_due_age() == 10.0
    clock.advance(LEASE + 5)  # the lease expired 5 s ago; the other has waited 75 s
    assert await store.count_due() == 2
    assert await store.oldest_due_age() == 75.0


# --- schema and durability ----------------------------------------------------------


async def test_reopening_keeps_data_and_the_schema_revision(open_store, store):
    recorded = await record(store)
    await store.aclose()
    reopened = await open_store()
    assert (await reopened.get_event(recorded.event_id)).body == BODY
    async with reopened.engine.connect() as conn:
        assert await conn.run_sync(current_revisions) == (head_revision(),)


@pytest.mark.parametrize("backend", ["postgres"])  # SQLite has no server to drop a connection
async def test_a_dropped_postgres_connection_costs_no_write(store, request):
    """The server drops the store's connection (a restart, ``pg_terminate_backend``): the next
    intake still succeeds, on a new connection (pre-ping finds the dead one)."""
    first = await record(store, "evt_before")
    async with store.engine.connect() as conn:  # the connection the last write used (the one idle in the pool)
        pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
    killer = await asyncpg.connect(request.getfixturevalue("postgres_url"))
    try:
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await killer.close()
    await anyio.sleep(0.1)  # the backend exits
    second = await record(store, "evt_after")
    assert second.event_id != first.event_id and not second.duplicate
    assert (await store.get_event(second.event_id)).provider_event_id == "evt_after"


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_postgres_write_sends_its_transaction_and_nothing_more(store):
    # SQLAlchemy's pre-ping on asyncpg is three round trips per checkout (BEGIN, ";", ROLLBACK): more
    # than the statements of a claim. A connection is checked without one (see create_store_engine).
    sent: list[str] = []
    logging: set[int] = set()

    def log_queries(dbapi_connection, _record, _proxy) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in logging:
            logging.add(id(driver))
            driver.add_query_logger(lambda record: sent.append(record.query.strip().upper()))

    event.listen(store.engine.sync_engine.pool, "checkout", log_queries)
    await record(store, "evt_1")
    sent.clear()  # from here on, every write's connection logs what it sends
    await record(store, "evt_2")
    await store.claim_due("w", LEASE, 10)
    assert "COMMIT;" in sent
    assert [query for query in sent if query in (";", "ROLLBACK;")] == []  # the ping's


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_runs_in_wal_with_full_sync(store):
    async with store.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1


# --- concurrency: two stores, two engines, one database ----------------------------------


async def test_two_stores_claiming_concurrently_never_claim_a_delivery_twice(open_store):
    one, two = await open_store(), await open_store()
    expected = set()
    for n in range(30):
        expected |= set((await one.record_event("github", f"e{n}", [], b"{}", ["a", "b"])).delivery_ids)
    claims: list[tuple[str, int]] = []

    async def worker(store: DeliveryStore, name: str) -> None:
        while batch := await store.claim_due(name, LEASE, 3):
            claims.extend((name, c.delivery.id) for c in batch)
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(worker, one, f"one-{n}")
            tg.start_soon(worker, two, f"two-{n}")
    claimed_ids = [delivery_id for _, delivery_id in claims]
    assert len(claimed_ids) == len(set(claimed_ids)), "a delivery was claimed twice"
    assert set(claimed_ids) == expected
    assert {d.attempts for d in await one.list_deliveries(limit=1000)} == {1}


CLAIMER = """
import asyncio, json, sys, time
from app.webhooks.store import DeliveryStore

async def main(url, schema, owner, start_at):
    store = await DeliveryStore.open(url, schema=schema or None)
    claimed = []
    try:
        await asyncio.sleep(max(0.0, float(start_at) - time.time()))
        while batch := await store.claim_due(owner, 60, 2):
            claimed += [c.delivery.id for c in batch]
    finally:
        await store.aclose()
    print(json.dumps(claimed))

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.slow
async def test_two_processes_claiming_concurrently_never_claim_a_delivery_twice(database, open_store):
    url, schema = database
    store = await open_store(clock=utc_now)  # the claimers run on the real clock
    expected = set()
    for n in range(50):
        expected |= set((await store.record_event("github", f"e{n}", [], b"{}", ["a", "b"])).delivery_ids)
    start_at = str(time.time() + 2.0)  # both start claiming together, after their imports
    outputs: dict[str, list[int]] = {}

    async def claimer(owner: str) -> None:
        command = [sys.executable, "-c", CLAIMER, url, schema or "", owner, start_at]
        result = await anyio.run_process(command, check=True)
        outputs[owner] = json.loads(result.stdout)

    async with anyio.create_task_group() as tg:
        tg.start_soon(claimer, "process-1")
        tg.start_soon(claimer, "process-2")
    claimed = outputs["process-1"] + outputs["process-2"]
    assert len(claimed) == len(set(claimed)), "a delivery was claimed by both processes"
    assert set(claimed) == expected


async def test_concurrent_claim_one_has_exactly_one_winner(open_store):
    one, two = await open_store(), await open_store()
    recorded = await one.record_event("github", None, [], b"{}", [f"t{n}" for n in range(10)])
    winners: list[str] = []

    async def claim(store: DeliveryStore, name: str, delivery_id: int) -> None:
        if await store.claim_one(delivery_id, name, LEASE) is not None:
            winners.append(f"{delivery_id}:{name}")

    async with anyio.create_task_group() as tg:
        for delivery_id in recorded.delivery_ids:
            tg.start_soon(claim, one, "one", delivery_id)
            tg.start_soon(claim, two, "two", delivery_id)
    assert sorted(int(w.split(":")[0]) for w in winners) == sorted(recorded.delivery_ids)


async def test_concurrent_duplicates_from_two_stores_record_one_event(open_store):
    one, two = await open_store(), await open_store()
    results = []

    async def deliver(store: DeliveryStore) -> None:
        results.append(await store.record_event("github", "same-id", [], b"{}", ["orders"]))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(deliver, one)
            tg.start_soon(deliver, two)
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.event_id for r in results}) == 1
    assert len(await one.list_deliveries()) == 1


async def test_cancelled_callers_still_finish_the_transaction_and_return_the_connection(store):
    # A client hanging up cancels the request mid-intake: the event must still be fully
    # committed (or not at all) and no connection may be left checked out or half closed.
    delays = random.Random(7)
    tasks_before = len(asyncio.all_tasks())
    for _ in range(40):
        with anyio.move_on_after(delays.uniform(0, 0.005)):
            await store.record_event("github", None, [], b"x" * 1000, ["a", "b", "c"])
    assert len(await store.list_events(limit=100)) == 40
    assert len(await store.list_deliveries(limit=1000)) == 120
    assert store.engine.sync_engine.pool.checkedout() == 0
    await anyio.sleep(0.05)
    assert len(asyncio.all_tasks()) == tasks_before


# --- failures become StoreUnavailable -----------------------------------------------------


async def test_unreachable_postgres_is_store_unavailable_without_the_password():
    url = "postgresql://gatehouse:hunter2@127.0.0.1:1/test"
    with pytest.raises(StoreUnavailable) as caught:
        await DeliveryStore.open(url, connect_timeout=2)
    assert "hunter2" not in str(caught.value)


async def test_sqlite_in_a_missing_directory_is_store_unavailable(tmp_path: Path):
    with pytest.raises(StoreUnavailable):
        await DeliveryStore.open(f"sqlite:///{tmp_path / 'missing' / 'webhooks.db'}")
    # After a failed connect aiosqlite stops its worker thread without awaiting it; let the
    # thread finish while this test's event loop is still open, or it reports a closed loop.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        "_connection_worker_thread" in thread.name for thread in threading.enumerate()
    ):
        await anyio.sleep(0.01)


async def test_locked_sqlite_is_store_unavailable_after_the_busy_timeout(tmp_path: Path, clock):
    path = tmp_path / "webhooks.db"
    store = await DeliveryStore.open(f"sqlite:///{path}", clock=clock, busy_timeout_ms=200)
    try:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="locked"):
                await record(store)
            assert time.monotonic() - started >= 0.15
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (await record(store)).duplicate is False
    finally:
        await store.aclose()


async def test_a_foreign_write_does_not_break_dedupe(store):
    # A second writer (another replica) inserting directly is still seen as the first copy.
    from app.webhooks.tables import events

    async with store.engine.begin() as conn:
        await conn.execute(
            insert(events).values(endpoint="github", provider_event_id="seen", received_at=START, headers=[], body=b"")
        )
    assert (await record(store, provider_id="seen")).duplicate is True
