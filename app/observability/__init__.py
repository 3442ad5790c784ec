"""Observability: logging with redaction, the JSON access log, Prometheus metrics, tracing.

May import: ``app.config``.
"""
