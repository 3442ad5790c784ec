"""Shared fixtures: the event loop backend and a real test upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.servers import RunningServer, run_uvicorn
from tests.upstreams import UpstreamStats, make_upstream


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[RunningServer, UpstreamStats]]:
    """The test upstream under uvicorn with default settings, as a normal server runs."""
    app, stats = make_upstream()
    async with run_uvicorn(app) as server:
        yield server, stats
