"""alembic's environment for the webhook store: run the revisions on the connection handed in.

``app.webhooks.migrations.upgrade`` puts an open connection (inside its transaction, after
the migration lock) in ``config.attributes["connection"]`` and the store's schema in
``config.attributes["version_table_schema"]``. Nothing is read from ``alembic.ini`` or a
logging file, so the revisions run the same under ``gatehouse serve``, the tests and a
wheel install.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from app.webhooks.migrations import VERSION_TABLE
from app.webhooks.tables import metadata

if context.is_offline_mode():
    raise RuntimeError("the webhook store migrates at start-up on a live connection; offline (--sql) is not supported")

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("the webhook store's migrations run from app.webhooks.migrations.migrate, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    version_table_schema=context.config.attributes.get("version_table_schema"),
    # SQLite rebuilds a table for most ALTERs: a revision's batch_alter_table does that there.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():  # inside the caller's transaction: alembic neither begins nor commits
    context.run_migrations()
