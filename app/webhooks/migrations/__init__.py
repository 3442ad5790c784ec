"""The webhook store's schema migrations (alembic), run at start-up by ``DeliveryStore.open``.

``migrate(conn, schema=...)`` brings the database to the newest revision inside the
caller's transaction, so a failed migration leaves nothing half done (PostgreSQL and
SQLite both roll DDL back). Replicas starting together against one PostgreSQL take
``pg_advisory_xact_lock`` first: one migrates, the others wait for its commit and find
nothing left to do. SQLite needs no lock: every transaction opens with ``BEGIN
IMMEDIATE``, which already admits one writer.

This directory is an alembic script directory: ``env.py`` runs the revisions in
``versions/`` on the connection handed in (no ``alembic.ini``, no logging file), and
the revision table is ``webhook_alembic_version`` in the store's schema, so a database
the store shares with another alembic-managed application keeps both apart.

Databases migrated by Gatehouse before alembic carry ``webhook_schema_version``
(version 1 or 2): that is read once, the matching revision stamped, the old table dropped,
and the upgrade continues from there. A revision this code does not know (a newer
Gatehouse wrote it) stops start-up with ``SchemaTooNew`` before anything is changed.

Adding a revision: change ``app.webhooks.tables``, add ``versions/NNNN_what.py`` with the
next number as ``revision`` and the newest as ``down_revision``, and write ``upgrade`` and
``downgrade`` out in ``op`` calls (never from the metadata: a revision must stay what it
was). ``tests/integration/test_webhook_migrations.py`` fails until the migrated database
and the metadata agree.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from pathlib import Path
from typing import NamedTuple

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config.webhooks import store_url
from app.webhooks.database import create_store_engine, translate_errors
from app.webhooks.failures import SchemaTooNew, StoreError

VERSION_TABLE = "webhook_alembic_version"
LEGACY_VERSION_TABLE = "webhook_schema_version"
# What the hand-versioned schema's numbers correspond to; they will not grow.
LEGACY_REVISIONS = {1: "0001", 2: "0002"}
MIGRATION_LOCK = 0x6761_7465_686F  # any constant: serialises replicas migrating one Postgres database
SCRIPTS = Path(__file__).parent

log = logging.getLogger("gatehouse.webhooks")

# alembic's ``context`` and ``op`` are process-wide proxies, and a migration awaits the driver
# between its statements: two stores migrating different databases in one event loop would
# swap each other's proxies. One migration per loop at a time (a database lock serialises
# migrations of the same database across processes; this only covers one process).
_RUNNING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


class Migrated(NamedTuple):
    """What one start-up found (empty: a fresh store; a pre-alembic store: its bridged revision) and left."""

    found: tuple[str, ...]
    head: str


class Status(NamedTuple):
    """Where a store stands against this code, for ``gatehouse migrate --check``."""

    found: tuple[str, ...]  # its alembic revision(s); for a pre-alembic store, the one it would be stamped with
    legacy: int | None  # the hand-kept schema version of a store not yet bridged
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.legacy is None and self.found == (self.head,)

    def describe(self) -> str:
        if self.up_to_date:
            return f"webhook store is at revision {self.head}, the newest this Gatehouse knows"
        if self.legacy is not None:
            return (
                f"webhook store has the hand-versioned schema version {self.legacy}: start-up stamps it"
                f" {self.found[0]} and migrates it to {self.head}"
            )
        if not self.found:
            return f"webhook store is empty: start-up creates revision {self.head}"
        return f"webhook store is at revision {', '.join(self.found)}: start-up migrates it to {self.head}"


def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(SCRIPTS))


def head_revision() -> str:
    """The newest revision this Gatehouse knows."""
    return _head(script_directory())


def _head(scripts: ScriptDirectory) -> str:
    head = scripts.get_current_head()
    assert head is not None, "the webhook store has at least one revision"
    return head


def _schema_on(connection: Connection, schema: str | None) -> str | None:
    # As in create_store_engine: a schema applies to Postgres only (SQLite would read it as an attached database).
    return schema if connection.dialect.name == "postgresql" else None


def migration_context(connection: Connection, schema: str | None = None) -> MigrationContext:
    """A context on the store's revision table (for reading the revision, or comparing the schema)."""
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE, "version_table_schema": schema})


def current_revisions(connection: Connection, schema: str | None = None) -> tuple[str, ...]:
    """The revision(s) the database is at; empty for a fresh (or legacy, not yet bridged) store."""
    return tuple(migration_context(connection, schema).get_current_heads())


async def migrate(conn: AsyncConnection, *, schema: str | None = None) -> Migrated:
    """Upgrade the store to the newest revision inside the caller's transaction.

    ``schema`` (Postgres only, already validated as a plain name) is created if missing and
    holds the revision table; the connection's ``search_path`` puts the tables there.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        if schema is not None:
            await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    async with _RUNNING.setdefault(asyncio.get_running_loop(), asyncio.Lock()):
        migrated = await conn.run_sync(upgrade, schema)
    if migrated.found != (migrated.head,):
        log.info("webhook store schema migrated from %s to %s", ", ".join(migrated.found) or "nothing", migrated.head)
    return migrated


async def migrate_store(url: str, schema: str | None = None) -> Migrated:
    """Open the store at ``url``, migrate it and close it (``gatehouse migrate``)."""
    engine = create_store_engine(url, schema=schema)
    try:
        with translate_errors():
            async with engine.begin() as conn:
                return await migrate(conn, schema=schema)
    finally:
        await engine.dispose()


async def store_status(url: str, schema: str | None = None) -> Status:
    """Read where the store at ``url`` stands without changing it; ``SchemaTooNew`` if a newer Gatehouse wrote it."""
    parsed = store_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return Status((), None, head_revision())  # connecting would create the file
    engine = create_store_engine(url, schema=schema)
    try:
        with translate_errors():
            async with engine.connect() as conn:
                return await conn.run_sync(_status, schema)
    finally:
        await engine.dispose()


def _status(connection: Connection, schema: str | None) -> Status:
    schema = _schema_on(connection, schema)
    scripts = script_directory()
    found = current_revisions(connection, schema)
    legacy = None if found else _legacy_version(connection, schema)
    if legacy is not None:
        found = (LEGACY_REVISIONS[legacy],)
    refuse_unknown(scripts, found)
    return Status(found, legacy, _head(scripts))


def upgrade(connection: Connection, schema: str | None = None) -> Migrated:
    """``migrate``'s synchronous body: bridge a pre-alembic store, refuse an unknown revision, upgrade."""
    schema = _schema_on(connection, schema)
    scripts = script_directory()
    config = alembic_config(connection, schema)
    current = current_revisions(connection, schema)
    if current:
        refuse_unknown(scripts, current)
    else:
        legacy = _bridge_legacy(connection, schema)
        if legacy is not None:
            command.stamp(config, legacy)
            current = (legacy,)
    command.upgrade(config, "head")
    return Migrated(current, _head(scripts))


def refuse_unknown(scripts: ScriptDirectory, current: tuple[str, ...]) -> None:
    known = {script.revision for script in scripts.walk_revisions()}
    unknown = [revision for revision in current if revision not in known]
    if unknown:
        raise SchemaTooNew(
            f"webhook store schema is at revision {', '.join(unknown)}, which this Gatehouse does not know"
            f" (its newest is {scripts.get_current_head()}): a newer Gatehouse migrated it. Run that version"
            " or a later one, or restore the backup taken before the upgrade"
        )


def _bridge_legacy(connection: Connection, schema: str | None) -> str | None:
    """The revision a store versioned by hand (``webhook_schema_version``) is at; drops that table."""
    version = _legacy_version(connection, schema)
    if version is None:
        return None
    revision = LEGACY_REVISIONS[version]
    connection.exec_driver_sql(f"DROP TABLE {_legacy_table(schema)}")
    return revision


def _legacy_version(connection: Connection, schema: str | None) -> int | None:
    if not inspect(connection).has_table(LEGACY_VERSION_TABLE, schema=schema):
        return None
    version = connection.exec_driver_sql(f"SELECT max(version) FROM {_legacy_table(schema)}").scalar()
    if isinstance(version, int) and version > max(LEGACY_REVISIONS):
        raise SchemaTooNew(
            f"webhook store schema is version {version}; this Gatehouse knows versions 1 and 2 (revisions"
            f" {', '.join(LEGACY_REVISIONS.values())} and later): a newer Gatehouse migrated it"
        )
    if version not in LEGACY_REVISIONS:
        raise StoreError(
            f"webhook store: {LEGACY_VERSION_TABLE} holds {version!r}, not a version Gatehouse wrote;"
            " restore a backup or remove the store's tables"
        )
    return int(version)


def _legacy_table(schema: str | None) -> str:
    return f'"{schema}".{LEGACY_VERSION_TABLE}' if schema else LEGACY_VERSION_TABLE


def alembic_config(connection: Connection, schema: str | None = None) -> Config:
    """An alembic ``Config`` for ``alembic.command`` calls on ``connection`` (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS).replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes["version_table_schema"] = schema
    return config
