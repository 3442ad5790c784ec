"""FastAPI's check for pydantic v1 models, answered without importing ``pydantic.v1``.

FastAPI (0.165) refuses a ``pydantic.v1`` model wherever it builds a field: a route's
parameters and response model, when a router is defined and again when the app first
routes a request to it. To ask "is this a v1 model?" it imports ``pydantic.v1`` (24 modules;
1.4 MiB of a started gateway's RSS after load), though a class can derive from
``pydantic.v1.BaseModel`` only once something has imported that module. Here the same
question is asked of ``sys.modules``: the same answer, no import. Nothing is marked missing,
so other code in the process may still import ``pydantic.v1``, and FastAPI then checks
against it. When FastAPI stops asking (it drops v1 support) this does nothing, and
``tests/unit/test_lazy_imports.py`` fails if it stops taking effect.
"""

from __future__ import annotations

import sys
from typing import Any

from fastapi._compat import shared


def _is_pydantic_v1_model_class(cls: Any) -> bool:
    v1 = sys.modules.get("pydantic.v1")
    base = getattr(v1, "BaseModel", None)
    return base is not None and shared.lenient_issubclass(cls, base)


def check_v1_models_without_importing_v1() -> None:
    """Make FastAPI's check (``annotation_is_pydantic_v1`` calls it) import nothing; call before defining routes."""
    if hasattr(shared, "is_pydantic_v1_model_class"):
        shared.is_pydantic_v1_model_class = _is_pydantic_v1_model_class
