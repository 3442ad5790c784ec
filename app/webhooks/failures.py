"""The webhook store's errors, apart from ``database`` so raising or catching them needs no SQLAlchemy::

StoreError              any store failure; intake answers 503 (WebhookStoreUnavailable)
├── StoreUnavailable    unreachable, locked or timed out: try again later
└── SchemaTooNew        the database was migrated by a newer Gatehouse: start-up stops
"""

from __future__ import annotations


class StoreError(Exception):
    """The webhook store failed; the message never holds a password."""


class StoreUnavailable(StoreError):
    """The database could not be reached, was locked or timed out: try again later."""


class SchemaTooNew(StoreError):
    """The database's schema revision is not one this Gatehouse knows: a newer one migrated it.

    Raised at start-up, before anything is written; run the newer Gatehouse (or restore a
    backup taken before it upgraded the schema).
    """
