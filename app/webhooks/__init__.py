"""Webhook relay: verify → persist → acknowledge → deliver in the background.

Pure: ``signatures`` (the verifiers), ``schedule`` (the retry policy),
``records`` (what the store hands out), ``failures`` (the store's errors, no
SQLAlchemy). I/O: ``database`` (the SQLAlchemy
engine and error translation), ``tables`` (the schema the queries use),
``migrations`` (alembic revisions, run at start-up), ``store``
and ``queries`` (the durable delivery store), ``intake`` (the ASGI endpoint),
``delivery`` (the dispatcher), ``runtime`` (what the lifespan opens).

May import: ``app.config``, ``app.errors``, ``app.wire``, ``app.observability``, ``app.outbound``, ``app.resilience``.
"""
