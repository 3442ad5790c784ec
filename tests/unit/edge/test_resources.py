"""The edge's client and rate-limit storage: built when the edge opens if the configuration uses them,
otherwise on first use, and never outside the lifespan."""

from __future__ import annotations

from typing import Any

import pytest

import app.edge.ratelimit
from app.config.settings import Settings
from app.edge.resources import EdgeResources

pytestmark = pytest.mark.anyio

ROUTE = {"name": "api", "prefix": "/", "upstream": "http://127.0.0.1:9"}


class RecordingStore:
    built: list[RecordingStore] = []

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.closed = False
        RecordingStore.built.append(self)

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[RecordingStore]:
    monkeypatch.setattr(RecordingStore, "built", [])
    monkeypatch.setattr(app.edge.ratelimit, "RateLimitStore", RecordingStore)
    return RecordingStore.built


@pytest.mark.parametrize(
    "settings",
    [
        {"rate_limit": {"limit": "10/second"}},
        {"routes": [{**ROUTE, "rate_limit": {"limit": "10/second"}}]},
        {"redis_url": "redis://127.0.0.1:9/0"},
    ],
)
async def test_a_configured_storage_is_built_when_the_edge_opens(built: list[Any], settings: dict[str, Any]) -> None:
    configured = Settings(**settings)
    edge = EdgeResources(configured)
    await edge.open()
    # Before any request: a storage that cannot be built stops start-up.
    assert [store.settings for store in built] == [configured]
    assert edge.rate_limits is built[0]
    await edge.aclose()
    assert built[0].closed


async def test_otherwise_storage_and_client_are_built_on_first_use(built: list[Any]) -> None:
    edge = EdgeResources(Settings(routes=[ROUTE]))
    await edge.open()
    assert built == []
    store = edge.rate_limits  # a route added by a reload, say
    assert built == [store] and edge.rate_limits is store
    client = edge.http
    assert edge.http is client and not client.is_closed
    await edge.aclose()
    assert store.closed and client.is_closed


async def test_outside_the_lifespan_neither_is_built(built: list[Any]) -> None:
    edge = EdgeResources(Settings(routes=[ROUTE]))
    with pytest.raises(RuntimeError, match="edge is not open"):
        edge.rate_limits  # noqa: B018
    await edge.open()
    await edge.aclose()
    with pytest.raises(RuntimeError, match="edge is not open"):
        edge.http  # noqa: B018
    assert built == []
