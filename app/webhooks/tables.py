"""The webhook store's schema: one set of tables for SQLite and PostgreSQL alike.

Times are stored as integer microseconds since the Unix epoch (``Timestamp``),
so ordering and comparison are plain integer work on both backends and no
driver's time-zone handling is involved; Python code sees aware UTC datetimes.

``migrate`` runs at start-up: it creates missing tables and records the schema
version, refusing a database written by a newer Gatehouse.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeDecorator

from app.webhooks.records import DeliveryStatus

SCHEMA_VERSION = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MIGRATION_LOCK = 0x6761_7465_686F  # any constant: serialises replicas migrating one Postgres database

STATUSES = get_args(DeliveryStatus)

# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Timestamp(TypeDecorator[datetime]):
    """An aware datetime stored as integer microseconds since the epoch."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("webhook store times must be timezone-aware")
        return (value - _EPOCH) // _MICROSECOND

    def process_result_value(self, value: int | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        return None if value is None else _EPOCH + value * _MICROSECOND


metadata = MetaData()

schema_version = Table(
    "webhook_schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
)

events = Table(
    "webhook_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("endpoint", String(64), nullable=False),
    Column("provider_event_id", String(255), nullable=True),
    Column("event_type", String(200), nullable=True),  # schema version 2
    Column("received_at", Timestamp, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("body", LargeBinary, nullable=False),
    # NULL provider ids never collide, so events without one are never deduplicated.
    UniqueConstraint("endpoint", "provider_event_id", name="uq_webhook_events_provider_id"),
    Index("ix_webhook_events_received_at", "received_at"),
    Index("ix_webhook_events_provider_event_id", "provider_event_id"),  # schema version 2
)

deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", Id, ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("target", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Timestamp, nullable=True),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_expires_at", Timestamp, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    UniqueConstraint("event_id", "target", name="uq_webhook_deliveries_event_target"),
    CheckConstraint(f"status IN {STATUSES!r}", name="ck_webhook_deliveries_status"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_lease", "status", "lease_expires_at"),
    Index("ix_webhook_deliveries_endpoint", "endpoint", "status"),
)

attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_webhook_attempts_delivery", "delivery_id"),
)


class SchemaTooNew(Exception):
    """The database was migrated by a newer Gatehouse than this one."""


async def migrate(conn: AsyncConnection, *, schema: str | None = None) -> int:
    """Create or upgrade the schema inside the caller's transaction; returns the version.

    On Postgres an advisory lock makes replicas starting together migrate one at a
    time, and ``schema`` (already validated as a plain name) is created if missing.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        if schema is not None:
            await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.run_sync(metadata.create_all)
    found = (await conn.execute(select(schema_version.c.version))).scalars().all()
    if not found:
        await conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
        return SCHEMA_VERSION
    version = int(max(found))
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"webhook store schema is version {version}; this Gatehouse knows {SCHEMA_VERSION}")
    if version < 2:  # 2: the provider's event type, and finding an event by its provider id alone
        await conn.execute(text("ALTER TABLE webhook_events ADD COLUMN event_type VARCHAR(200)"))
        await conn.execute(
            text("CREATE INDEX ix_webhook_events_provider_event_id ON webhook_events (provider_event_id)")
        )
        await conn.execute(update(schema_version).values(version=2))
        version = 2
    # Later versions add their upgrade steps here, each followed by a version bump.
    return version
