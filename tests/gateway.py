"""Gatehouse itself on a real uvicorn server, configured exactly as in production."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from app.assembly.lifespan import State
from app.config.settings import Settings
from app.main import create_app
from app.serving.uvicorn_server import server_config
from tests.servers import LOOPBACK, RunningServer, run_uvicorn


@dataclass(frozen=True, slots=True)
class RunningGateway:
    url: str
    port: int
    app: FastAPI
    server: RunningServer
    settings: Settings

    @property
    def state(self) -> State:
        """The lifespan state (clients, routes) of the running server."""
        state: State = self.server.server.lifespan.state  # type: ignore[attr-defined]
        return state

    def connections_in_use(self) -> int:
        """Upstream connections held by open exchanges, over every upstream."""
        clients = self.state["gateway"].generation.clients
        assert clients is not None
        return sum(clients.in_use().values())

    def upstreams(self) -> dict[str, Any]:
        """What ``/upstreams`` shows, by route name."""
        generation = self.state["gateway"].generation
        assert generation.clients is not None
        snapshot: dict[str, Any] = generation.pools.snapshot(generation.clients)
        return snapshot


def route(name: str, prefix: str, upstream: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "prefix": prefix, "upstream": upstream, **options}


@contextlib.asynccontextmanager
async def run_gateway(
    *routes: dict[str, Any], access_write: Callable[[bytes], None] | None = None, **settings: Any
) -> AsyncIterator[RunningGateway]:
    """Serve Gatehouse with ``routes`` on an ephemeral loopback port.

    The access log's batches go to ``access_write`` (by default nowhere: test output stays readable).
    """
    built = Settings(routes=list(routes), **settings)
    app = create_app(built, access_write=access_write or _discard)
    config = server_config(app, host=LOOPBACK, port=0, log_level="warning", tls=built.tls)
    async with run_uvicorn(config=config) as server:
        yield RunningGateway(url=server.url, port=server.port, app=app, server=server, settings=built)


def _discard(_data: bytes) -> None:
    pass
