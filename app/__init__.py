"""Gatehouse: an API gateway and webhook relay."""

import sys
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

# httpx's ``__init__`` imports its command-line client (``httpx._main``: click, pygments, rich) whenever
# those happen to be installed, only to export ``httpx.main`` for the ``httpx`` command. Gatehouse never
# calls it, and rich arrives with unrelated packages (fastapi[standard], typer, schemathesis in dev):
# 3-4 MiB RSS in every gateway process. A ``None`` entry in ``sys.modules`` makes that one import raise
# ModuleNotFoundError (https://docs.python.org/3/reference/import.html#the-module-cache), which httpx
# catches: in this process ``httpx.main`` then asks for ``pip install 'httpx[cli]'``. The ``httpx``
# command runs in its own process and is unaffected. Nothing changes if httpx was imported first.
if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]  # typeshed leaves out the documented None


class DeferredOpenAPIModels:
    """Imports ``fastapi.openapi.models`` with pydantic's ``defer_build`` on for the models it defines.

    FastAPI (0.165) imports its OpenAPI models with ``fastapi`` itself (``fastapi.params`` takes
    ``Example`` from them), and pydantic builds each model's validator and serializer as the class is
    made: about 40 models, 1.1 MiB of a started gateway's RSS, for a document Gatehouse builds only
    when its admin-only ``/openapi.json`` is asked for. pydantic can build a model's validator at its
    first use instead (``defer_build``), but FastAPI has no setting for it, so that one module runs
    with ``defer_build`` as pydantic's default (``BaseModel.model_config``, which new models inherit;
    put back once it is imported). A model then builds when first used, with the same result; the
    three FastAPI rebuilds at import (``Schema``, ``Operation``, ``Encoding``) still build at once.
    Nothing changes if FastAPI was imported first. When FastAPI defers them itself this can go
    (``tests/unit/test_deferred_openapi.py`` says when).
    """

    NAME = "fastapi.openapi.models"

    def find_spec(self, name: str, path: Any, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != self.NAME:
            return None
        sys.meta_path.remove(self)
        spec = PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            loader = spec.loader
            run = loader.exec_module

            def run_deferred(module: ModuleType) -> None:
                del loader.exec_module  # the loader may be shared (zipimport): its next module runs as before
                from pydantic import BaseModel

                config: dict[str, Any] = BaseModel.model_config  # type: ignore[assignment]
                before = config.get("defer_build")
                config["defer_build"] = True
                try:
                    run(module)
                finally:
                    if before is None:
                        del config["defer_build"]
                    else:
                        config["defer_build"] = before

            loader.exec_module = run_deferred  # type: ignore[method-assign]
        return spec


if "fastapi.openapi.models" not in sys.modules:
    sys.meta_path.insert(0, DeferredOpenAPIModels())
