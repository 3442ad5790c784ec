"""``app.main:app``: Gatehouse as an ASGI app for any server; ``create_app`` for tests and embedding.

``app`` is built on first access, so importing this module reads no settings.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.assembly.factory import create_app

__all__ = ["create_app"]

_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
