"""Logging (and later metrics, tracing)."""
