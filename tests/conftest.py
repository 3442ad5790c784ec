"""Shared fixtures: the event loop backend, a real test upstream, a reachable PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator

import pytest

from tests.servers import RunningServer, run_uvicorn
from tests.upstreams import UpstreamStats, make_upstream

POSTGRES_URL = os.environ.get("GATEHOUSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[RunningServer, UpstreamStats]]:
    """The test upstream under uvicorn with default settings, as a normal server runs."""
    app, stats = make_upstream()
    async with run_uvicorn(app) as server:
        yield server, stats


def _postgres_listening() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test database's URL; starts the local cluster if it is down (``.ci/run`` does too)."""
    if not _postgres_listening():
        versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        if versions:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                check=False,
                capture_output=True,
            )
        deadline = time.monotonic() + 30
        while not _postgres_listening() and time.monotonic() < deadline:
            time.sleep(0.2)
    if not _postgres_listening():
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 and could not be started")
    return POSTGRES_URL
