"""Observability: logging with redaction, the JSON access log, Prometheus metrics, tracing.

May import: ``app.config``, ``app.wire`` (the access log takes a checked ``RequestId``).
"""
