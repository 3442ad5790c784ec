"""Resilience: balancing over targets, health, retries, circuit breaking, bulkheads.

Pure policy (``balancing``, ``backoff``, ``breaker``, ``budget``, ``health``)
knows nothing of sockets and is tested in microseconds; ``targets`` holds a
route's live target state; ``endpoint`` (retries over a pool) and ``bulkhead``
are the parts that plug into the pipeline; ``pools`` builds them per route;
``checks`` runs active health checks in the lifespan.

May import: ``app.config``, ``app.errors``, ``app.wire``, ``app.outbound``, ``app.proxy``.
"""
