"""The provider's event type, and finding an event by its provider id alone (schema version 2)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("webhook_events", sa.Column("event_type", sa.String(200), nullable=True))  # SQLite can ADD
    op.create_index("ix_webhook_events_provider_event_id", "webhook_events", ["provider_event_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_provider_event_id", table_name="webhook_events")
    with op.batch_alter_table("webhook_events") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("event_type")
