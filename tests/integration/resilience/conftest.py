"""Two test upstreams, for routes with more than one target."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.servers import RunningServer, run_uvicorn
from tests.upstreams import UpstreamStats, make_upstream


@pytest.fixture
async def second_upstream() -> AsyncIterator[tuple[RunningServer, UpstreamStats]]:
    app, stats = make_upstream()
    async with run_uvicorn(app) as server:
        yield server, stats
