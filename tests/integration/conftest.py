"""Webhook store databases: every store test runs on a SQLite file and on the local PostgreSQL.

Postgres tests are never skipped: if the server is down the session fixture starts the local
cluster, and fails if it cannot. Each Postgres test gets a schema of its own, dropped afterwards.
"""

import uuid

import pytest

from app.webhooks.database import create_store_engine
from app.webhooks.store import DeliveryStore
from tests.webhooks import FakeClock


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture
async def database(backend, tmp_path, request):
    """(url, schema) of an empty database for this test; the Postgres schema is dropped after."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'webhooks.db'}", None
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"gh_test_{uuid.uuid4().hex[:12]}"
    yield url, schema
    engine = create_store_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def open_store(database, clock):
    """Opens stores (each with its own engine) on this test's database; closes them all after."""
    opened: list[DeliveryStore] = []
    url, schema = database

    async def _open(**kwargs) -> DeliveryStore:
        store = await DeliveryStore.open(url, schema=schema, clock=kwargs.pop("clock", clock), **kwargs)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        await store.aclose()
