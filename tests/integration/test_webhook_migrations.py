"""The webhook store's alembic migrations against a real SQLite file and the local PostgreSQL.

Fresh store → head; stores versioned by hand before alembic (``webhook_schema_version``
1 and 2, made here by the old code's DDL) → head with their data; a revision this code
does not know → start-up refused; replicas starting at once → one migration; and the
migrated database equals ``app.webhooks.tables.metadata`` (alembic's autogenerate
comparison), so the revisions and the model cannot drift apart.
"""

import json
import sys
from pathlib import Path

import anyio
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
)

from app.webhooks.database import create_store_engine
from app.webhooks.failures import SchemaTooNew
from app.webhooks.migrations import (
    LEGACY_VERSION_TABLE,
    alembic_config,
    current_revisions,
    head_revision,
    migrate_store,
    migration_context,
    store_status,
)
from app.webhooks.store import DeliveryStore
from app.webhooks.tables import metadata

pytestmark = pytest.mark.anyio

BODY = b'{"id": "evt_old"}\xff raw'


@pytest.fixture
async def engine(database):
    """An engine on this test's database (its schema first on the search path), to set up or inspect."""
    url, schema = database
    engine = create_store_engine(url, schema=schema)
    if schema is not None:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    yield engine
    await engine.dispose()


def legacy_metadata(version: int) -> MetaData:
    """The tables as the hand-versioned code (schema version 1 or 2) declared them for ``create_all``.

    A frozen copy on purpose (``git show 8205ba6:app/webhooks/tables.py`` is version 2): it must
    stay what old Gatehouses created, whatever ``app.webhooks.tables`` becomes.
    """
    meta = MetaData()
    Table("webhook_schema_version", meta, Column("version", Integer, primary_key=True, autoincrement=False))
    id_type = BigInteger().with_variant(Integer(), "sqlite")
    extra: list = []
    if version >= 2:
        extra = [
            Column("event_type", String(200), nullable=True),
            Index("ix_webhook_events_provider_event_id", "provider_event_id"),
        ]
    Table(
        "webhook_events",
        meta,
        Column("id", id_type, primary_key=True, autoincrement=True),
        Column("endpoint", String(64), nullable=False),
        Column("provider_event_id", String(255), nullable=True),
        Column("received_at", BigInteger, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("body", LargeBinary, nullable=False),
        UniqueConstraint("endpoint", "provider_event_id", name="uq_webhook_events_provider_id"),
        Index("ix_webhook_events_received_at", "received_at"),
        *extra,
    )
    Table(
        "webhook_deliveries",
        meta,
        Column("id", id_type, primary_key=True, autoincrement=True),
        Column("event_id", id_type, ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False),
        Column("endpoint", String(64), nullable=False),
        Column("target", String(64), nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", BigInteger, nullable=True),
        Column("lease_owner", String(255), nullable=True),
        Column("lease_expires_at", BigInteger, nullable=True),
        Column("last_status", Integer, nullable=True),
        Column("last_error", Text, nullable=True),
        Column("created_at", BigInteger, nullable=False),
        Column("updated_at", BigInteger, nullable=False),
        UniqueConstraint("event_id", "target", name="uq_webhook_deliveries_event_target"),
        CheckConstraint(
            f"status IN {('pending', 'delivering', 'delivered', 'dead')!r}", name="ck_webhook_deliveries_status"
        ),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_lease", "status", "lease_expires_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint", "status"),
    )
    Table(
        "webhook_attempts",
        meta,
        Column("id", id_type, primary_key=True, autoincrement=True),
        Column("delivery_id", id_type, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
        Column("started_at", BigInteger, nullable=False),
        Column("duration_ms", Integer, nullable=False),
        Column("status_code", Integer, nullable=True),
        Column("error", Text, nullable=True),
        Index("ix_webhook_attempts_delivery", "delivery_id"),
    )
    return meta


async def make_legacy_store(engine, version: int) -> int:
    """What the old ``migrate`` left behind (``create_all``, the version row) and one event with a delivery.

    Returns the event's id.
    """
    meta = legacy_metadata(version)
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
        await conn.execute(meta.tables["webhook_schema_version"].insert().values(version=version))
        inserted = await conn.execute(
            meta.tables["webhook_events"]
            .insert()
            .values(endpoint="github", provider_event_id="evt_old", received_at=0, headers=[], body=BODY)
        )
        await conn.execute(
            meta.tables["webhook_deliveries"]
            .insert()
            .values(
                event_id=inserted.inserted_primary_key[0],
                endpoint="github",
                target="orders",
                status="pending",
                attempts=0,
                created_at=0,
                updated_at=0,
                next_attempt_at=0,
            )
        )
    return int(inserted.inserted_primary_key[0])


def schema_differences(connection) -> list:
    return compare_metadata(migration_context(connection), metadata)


async def revision_and_differences(store: DeliveryStore) -> tuple[tuple[str, ...], list, bool]:
    async with store.engine.connect() as conn:
        revisions = await conn.run_sync(current_revisions)
        differences = await conn.run_sync(schema_differences)
        legacy_left = await conn.run_sync(lambda c: inspect(c).has_table(LEGACY_VERSION_TABLE))
    return revisions, differences, legacy_left


async def test_a_fresh_store_is_migrated_to_the_newest_revision_matching_the_tables(open_store):
    store = await open_store()
    revisions, differences, legacy_left = await revision_and_differences(store)
    assert revisions == (head_revision(),)
    assert differences == []
    assert legacy_left is False


async def test_a_schema_is_ignored_on_sqlite_as_the_engine_ignores_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'hooks.db'}"
    async with await DeliveryStore.open(url, schema="webhooks") as store:
        assert (await revision_and_differences(store))[:2] == ((head_revision(),), [])
    assert (await store_status(url, "webhooks")).up_to_date


async def test_the_metadata_comparison_sees_a_missing_index(open_store):
    # The drift check above can fail: remove what revision 0002 added and it reports it.
    store = await open_store()
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("DROP INDEX ix_webhook_events_provider_event_id")
    _, differences, _ = await revision_and_differences(store)
    assert [(d[0], d[1].name) for d in differences] == [("add_index", "ix_webhook_events_provider_event_id")]


async def test_every_revision_downgrades_and_upgrades_again(open_store):
    store = await open_store()
    async with store.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0001"))
        columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("webhook_events")})
        assert "event_type" not in columns
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables == {"webhook_alembic_version"}
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))
    assert (await revision_and_differences(store))[:2] == ((head_revision(),), [])


@pytest.mark.parametrize("version", [1, 2])
async def test_a_hand_versioned_store_is_bridged_and_upgraded_keeping_its_events(engine, open_store, version):
    event_id = await make_legacy_store(engine, version)
    store = await open_store()
    revisions, differences, legacy_left = await revision_and_differences(store)
    assert revisions == (head_revision(),)
    assert differences == []
    assert legacy_left is False
    event = await store.get_event(event_id)
    assert (event.provider_event_id, event.body) == ("evt_old", BODY)
    assert [d.target for d in await store.list_deliveries(endpoint="github")] == ["orders"]
    again = await store.record_event("github", "evt_old", [], b"repeat", ["orders"])
    assert again.duplicate is True
    fresh = await store.record_event("github", "evt_new", [], b"{}", ["orders"])
    assert fresh.duplicate is False


async def test_status_reads_a_hand_versioned_store_without_changing_it(engine, database):
    url, schema = database
    await make_legacy_store(engine, 1)
    status = await store_status(url, schema)
    assert (status.found, status.legacy, status.up_to_date) == (("0001",), 1, False)
    assert "hand-versioned schema version 1" in status.describe()
    assert (await store_status(url, schema)).legacy == 1  # still there: nothing was bridged
    migrated = await migrate_store(url, schema)
    assert migrated.found == ("0001",)
    status = await store_status(url, schema)
    assert (status.found, status.legacy, status.up_to_date) == ((head_revision(),), None, True)


async def test_a_revision_this_code_does_not_know_stops_start_up_and_changes_nothing(engine, database, open_store):
    store = await open_store()
    await store.aclose()
    async with engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE webhook_alembic_version SET version_num = '0999'")
    with pytest.raises(SchemaTooNew, match=r"revision 0999, which this Gatehouse does not know.*newer Gatehouse"):
        await open_store()
    with pytest.raises(SchemaTooNew, match="revision 0999"):
        await store_status(*database)
    async with engine.connect() as conn:
        assert await conn.run_sync(current_revisions) == ("0999",)


async def test_a_hand_versioned_store_newer_than_version_2_stops_start_up(engine, open_store):
    await make_legacy_store(engine, 2)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE webhook_schema_version SET version = 3")
    with pytest.raises(SchemaTooNew, match="version 3"):
        await open_store()
    async with engine.connect() as conn:  # rolled back: the old table is still there
        assert await conn.run_sync(lambda c: inspect(c).has_table(LEGACY_VERSION_TABLE))


async def test_stores_on_two_databases_migrate_concurrently_in_one_process(tmp_path):
    # alembic's context and op are process-wide: overlapping migrations must not mix them up.
    stores: list[DeliveryStore] = []

    async def open_one(name: str) -> None:
        stores.append(await DeliveryStore.open(f"sqlite:///{tmp_path / name}"))

    try:
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(open_one, f"store{n}.db")
        for store in stores:
            assert (await revision_and_differences(store))[:2] == ((head_revision(),), [])
    finally:
        for store in stores:
            await store.aclose()
    assert len(stores) == 3


STARTER = """
import asyncio, json, sys, time
from pathlib import Path
from app.webhooks.database import create_store_engine
from app.webhooks.migrations import migrate

async def main(url, schema, ready, go):
    engine = create_store_engine(url, schema=schema or None, busy_timeout_ms=30000)
    Path(ready).touch()
    deadline = time.monotonic() + 60
    while not Path(go).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    async with engine.begin() as conn:
        migrated = await migrate(conn, schema=schema or None)
    await engine.dispose()
    print(json.dumps(list(migrated.found)))

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.slow
async def test_replicas_starting_at_once_migrate_exactly_once(database, tmp_path):
    """Four processes, released together once their imports are done: one migrates, three find it done."""
    url, schema = database
    go = tmp_path / "go"
    found: list[list[str]] = []

    async def replica(n: int) -> None:
        command = [sys.executable, "-c", STARTER, url, schema or "", str(tmp_path / f"ready{n}"), str(go)]
        result = await anyio.run_process(command, check=True, cwd=Path(__file__).resolve().parents[2])
        found.append(json.loads(result.stdout))

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(replica, n)
        with anyio.fail_after(60):
            while len(list(tmp_path.glob("ready*"))) < 4:
                await anyio.sleep(0.02)
        go.touch()
    assert sorted(found) == [[], [head_revision()], [head_revision()], [head_revision()]]
