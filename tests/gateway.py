"""Gatehouse itself on a real server (uvicorn, or hypercorn with ``http_server="hypercorn"``), as in production."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from fastapi import FastAPI

from app.assembly.lifespan import State
from app.config.settings import Settings
from app.main import create_app
from app.serving import hypercorn_server
from app.serving.uvicorn_server import server_config
from tests.servers import LOOPBACK, STARTUP_TIMEOUT, RunningServer, loopback_socket, run_uvicorn, wait_stopped


@dataclass(frozen=True, slots=True)
class RunningGateway:
    url: str
    port: int
    app: FastAPI
    server: RunningServer | None  # None under hypercorn
    settings: Settings

    @property
    def state(self) -> State:
        """The lifespan state (clients, routes) of the running uvicorn server."""
        assert self.server is not None, "under hypercorn, reach the gateway through app.gateway"
        state: State = self.server.server.lifespan.state  # type: ignore[attr-defined]
        return state

    @property
    def ops_url(self) -> str:
        """The ops listener's base URL (the gateway runs with ``ops_listen``)."""
        address = self.state["ops_address"]
        assert address is not None, "this gateway has no ops_listen"
        return f"http://{address[0]}:{address[1]}"

    def connections_in_use(self) -> int:
        """Upstream connections held by open exchanges, over every upstream."""
        clients = self.app.gateway.generation.clients  # type: ignore[attr-defined]
        assert clients is not None
        return sum(clients.in_use().values())

    def upstreams(self) -> dict[str, Any]:
        """What ``/upstreams`` shows, by route name."""
        generation = self.state["gateway"].generation
        assert generation.clients is not None
        snapshot: dict[str, Any] = generation.pools.snapshot(generation.clients)
        return snapshot


# A token the tests configure as admin_token or metrics_token, to read the ops endpoints on the public port.
OPS_TOKEN = "ops-token-for-tests-0123456789ab"


def bearer(token: str = OPS_TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


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
    if built.http_server == "hypercorn":
        async with _run_hypercorn(app, built) as running:
            yield running
        return
    config = server_config(app, host=LOOPBACK, port=0, log_level="warning", tls=built.tls)
    async with run_uvicorn(config=config) as server:
        yield RunningGateway(url=server.url, port=server.port, app=app, server=server, settings=built)


def _discard(_data: bytes) -> None:
    pass


@contextlib.asynccontextmanager
async def _run_hypercorn(app: Any, built: Settings) -> AsyncIterator[RunningGateway]:
    """Gatehouse under hypercorn, as ``gatehouse serve`` runs it, on a socket bound here (port 0)."""
    config = hypercorn_server.hypercorn_config(built, host=LOOPBACK, port=0)
    config.errorlog = None
    with loopback_socket() as sock:
        sock.listen()
        port = sock.getsockname()[1]
        stop = asyncio.Event()
        task = asyncio.create_task(hypercorn_server.serve(app, config, shutdown_trigger=stop.wait, sockets=[sock]))
        try:
            with anyio.fail_after(STARTUP_TIMEOUT):
                while app.gateway.generation.clients is None:  # the lifespan opens them
                    if task.done():
                        task.result()
                        raise RuntimeError("hypercorn stopped before it started")
                    await anyio.sleep(0.005)
            scheme = "https" if built.tls is not None else "http"
            yield RunningGateway(url=f"{scheme}://{LOOPBACK}:{port}", port=port, app=app, server=None, settings=built)
        finally:
            stop.set()
            with anyio.CancelScope(shield=True):
                if not await wait_stopped(task, built.shutdown_grace + 5.0):
                    task.cancel()
                    await wait_stopped(task, 1.0)
                    raise TimeoutError(f"hypercorn on port {port} did not shut down")
            if not task.cancelled():
                task.result()


class Written:
    """An access-log sink for ``create_app(access_write=...)``: every batch, as written."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.batches.append(data)

    @property
    def text(self) -> str:
        return b"".join(self.batches).decode()

    def json(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.text.splitlines()]
