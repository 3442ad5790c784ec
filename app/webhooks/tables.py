"""The webhook store's schema: one set of tables for SQLite and PostgreSQL alike.

Times are stored as integer microseconds since the Unix epoch (``Timestamp``),
so ordering and comparison are plain integer work on both backends and no
driver's time-zone handling is involved; Python code sees aware UTC datetimes.

This metadata is the model the queries use, not how the database gets there:
the alembic revisions in ``app.webhooks.migrations`` create and upgrade the
tables, and a test compares the migrated database with this metadata so the
two cannot drift. A schema change is a change here plus a new revision there.
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
)
from sqlalchemy.types import TypeDecorator

from app.webhooks.records import DeliveryStatus

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

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

events = Table(
    "webhook_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("endpoint", String(64), nullable=False),
    Column("provider_event_id", String(255), nullable=True),
    Column("event_type", String(200), nullable=True),  # revision 0002
    Column("received_at", Timestamp, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("body", LargeBinary, nullable=False),
    # NULL provider ids never collide, so events without one are never deduplicated.
    UniqueConstraint("endpoint", "provider_event_id", name="uq_webhook_events_provider_id"),
    Index("ix_webhook_events_received_at", "received_at"),
    Index("ix_webhook_events_provider_event_id", "provider_event_id"),  # revision 0002
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
