"""Gatehouse: an API gateway and webhook relay."""

__version__ = "0.1.0"
