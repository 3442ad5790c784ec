"""The webhook store's errors, apart from ``database`` so raising or catching them needs no SQLAlchemy."""

from __future__ import annotations


class StoreError(Exception):
    """The webhook store failed; the message never holds a password."""


class StoreUnavailable(StoreError):
    """The database could not be reached, was locked or timed out: try again later."""
