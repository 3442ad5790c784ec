"""FastAPI's OpenAPI models imported with pydantic's ``defer_build`` (``app.DeferredOpenAPIModels``).

Each check runs in a fresh interpreter: this process has imported FastAPI long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BUILT = """
import json, sys
for name in sys.argv[1:]:
    __import__(name)
import fastapi
import pydantic
from fastapi.openapi import models
names = [n for n, v in vars(models).items() if isinstance(v, type) and issubclass(v, pydantic.BaseModel)]
print(json.dumps({
    "built": sorted(n for n in names if getattr(models, n).__pydantic_complete__),
    "models": len(names),
    "config": pydantic.BaseModel.model_config,
}))
"""

# A FastAPI app whose document uses many of the OpenAPI models: security schemes, parameters with
# examples, bodies, responses, tags, servers. The document is built (and validated by FastAPI's
# ``OpenAPI`` model) in a fresh interpreter, with or without Gatehouse imported first.
DOCUMENT = """
import json, sys
for name in sys.argv[1:]:
    __import__(name)
from typing import Annotated
from fastapi import Body, Depends, FastAPI, Query, Security
from fastapi.security import APIKeyHeader, HTTPBearer, OAuth2PasswordBearer
from pydantic import BaseModel, Field

class Item(BaseModel):
    name: str = Field(examples=["gate"])
    tags: list[str] = []
    parent: "Item | None" = None

api = FastAPI(title="t", version="1", servers=[{"url": "https://example.org"}])

@api.post("/items/{item_id}", tags=["items"], responses={404: {"description": "missing"}})
def put(
    item_id: int,
    item: Annotated[Item, Body(openapi_examples={"one": {"summary": "one", "value": {"name": "a"}}})],
    q: Annotated[str | None, Query(max_length=5)] = None,
    bearer=Security(HTTPBearer()),
    key=Depends(APIKeyHeader(name="x-key")),
    token=Depends(OAuth2PasswordBearer(tokenUrl="/token")),
) -> Item:
    return item

print(json.dumps(api.openapi(), sort_keys=True))
"""


def run(script: str, *first: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *first], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def test_fastapi_still_builds_its_openapi_models_at_import() -> None:
    """When this fails, FastAPI no longer builds them at import: remove DeferredOpenAPIModels from app/__init__.py."""
    plain = json.loads(run(BUILT))
    assert len(plain["built"]) > 30  # of 37; a few wait for forward references


def test_gatehouse_imports_them_deferred_and_leaves_pydantic_as_it_was() -> None:
    deferred = json.loads(run(BUILT, "app.main"))
    # Only what FastAPI rebuilds at import, and the security scheme the ops API makes at import.
    assert set(deferred["built"]) <= {"Schema", "Operation", "Encoding", "OAuthFlows", "HTTPBase", "HTTPBearer"}
    assert "OpenAPI" not in deferred["built"]
    assert deferred["config"] == {}  # later models are built at once, as pydantic's default says


def test_the_openapi_document_is_the_same() -> None:
    document = run(DOCUMENT, "app")
    assert document == run(DOCUMENT)
    assert json.loads(document)["components"]["securitySchemes"]["HTTPBearer"] == {"type": "http", "scheme": "bearer"}


def test_deferred_models_still_validate() -> None:
    script = """
import app, json
from fastapi.openapi.models import OpenAPI
from pydantic import ValidationError
assert not OpenAPI.__pydantic_complete__
good = OpenAPI.model_validate({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "x-extra": 1})
try:
    OpenAPI.model_validate({"openapi": "3.1.0", "info": {"title": 1}})
except ValidationError as exc:
    print(json.dumps([good.info.title, good.model_extra, [e["loc"] for e in exc.errors()]]))
"""
    title, extra, errors = json.loads(run(script))
    assert (title, extra) == ("t", {"x-extra": 1})
    assert sorted(map(tuple, errors)) == [("info", "title"), ("info", "version")]


def test_the_loader_is_left_as_it_was() -> None:
    """A loader may be shared (zipimport keeps one per archive): the next module it runs must not be deferred."""
    script = """
import app, json, sys
import fastapi.openapi.models
loader = sys.modules["fastapi.openapi.models"].__spec__.loader
print(json.dumps(sorted(vars(loader))))
"""
    assert "exec_module" not in json.loads(run(script))
