"""FastAPI still refuses pydantic v1 models when Gatehouse answers its check without importing ``pydantic.v1``.

``app.assembly.fastapi_v1`` replaces how FastAPI asks "is this a v1 model?"; that nothing imports
``pydantic.v1`` any more is checked in a fresh interpreter (tests/unit/test_lazy_imports.py).
"""

from __future__ import annotations

import warnings

import pytest
from fastapi import APIRouter
from fastapi.exceptions import PydanticV1NotSupportedError
from pydantic import BaseModel

from app.assembly.fastapi_v1 import check_v1_models_without_importing_v1


def test_a_v1_response_model_is_still_refused() -> None:
    check_v1_models_without_importing_v1()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic.v1 may warn about the Python version
        from pydantic import v1

    class Old(v1.BaseModel):
        count: int

    with pytest.raises(PydanticV1NotSupportedError):
        APIRouter().get("/old", response_model=Old)(lambda: {"count": 1})


def test_a_v1_model_in_a_union_is_still_refused() -> None:
    check_v1_models_without_importing_v1()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydantic import v1

    class Old(v1.BaseModel):
        count: int

    class New(BaseModel):
        count: int

    with pytest.raises(PydanticV1NotSupportedError):
        APIRouter().get("/either", response_model=New | Old)(lambda: {"count": 1})
    APIRouter().get("/new", response_model=New)(lambda: {"count": 1})  # a v2 model is fine
