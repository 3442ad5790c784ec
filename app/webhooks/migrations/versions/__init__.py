"""The webhook store's revisions, oldest first; alembic loads them by file (it skips this one)."""
