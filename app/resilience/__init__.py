"""Resilience: balancing over targets, health, retries, circuit breaking, bulkheads, drain.

Pure policy (``balancing``, ``backoff``, ``breaker``, ``budget``, ``health``)
knows nothing of sockets and is tested in microseconds; ``targets`` holds a
route's live target state; ``endpoint`` and ``bulkhead`` are the I/O parts that
plug into the pipeline; ``checks`` runs active health checks in the lifespan.
"""
