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


def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(SCRIPTS))


def head_revision() -> str:
    """The newest revision this Gatehouse knows."""
    head = script_directory().get_current_head()
    assert head is not None, "the webhook store has at least one revision"
    return head


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


def upgrade(connection: Connection, schema: str | None = None) -> Migrated:
    """``migrate``'s synchronous body: bridge a pre-alembic store, refuse an unknown revision, upgrade."""
    scripts = script_directory()
    config = _config(connection, schema)
    current = current_revisions(connection, schema)
    if current:
        refuse_unknown(scripts, current)
    else:
        legacy = _bridge_legacy(connection, schema)
        if legacy is not None:
            command.stamp(config, legacy)
            current = (legacy,)
    command.upgrade(config, "head")
    return Migrated(current, head_revision())


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
    if not inspect(connection).has_table(LEGACY_VERSION_TABLE, schema=schema):
        return None
    table = f'"{schema}".{LEGACY_VERSION_TABLE}' if schema else LEGACY_VERSION_TABLE
    version = connection.exec_driver_sql(f"SELECT max(version) FROM {table}").scalar()
    if version not in LEGACY_REVISIONS:
        if isinstance(version, int) and version > max(LEGACY_REVISIONS):
            raise SchemaTooNew(f"webhook store schema is version {version}; this Gatehouse knows up to 2")
        raise StoreError(
            f"webhook store: {LEGACY_VERSION_TABLE} holds {version!r}, not a version Gatehouse wrote;"
            " restore a backup or remove the store's tables"
        )
    connection.exec_driver_sql(f"DROP TABLE {table}")
    return LEGACY_REVISIONS[version]


def _config(connection: Connection, schema: str | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS).replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes["version_table_schema"] = schema
    return config
