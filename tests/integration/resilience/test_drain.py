"""Draining: /readyz turns 503 the moment shutdown begins."""

from __future__ import annotations

import signal

import httpx
import pytest

from app.config.settings import Settings
from app.main import create_app
from app.serving.uvicorn_server import DrainingServer, server_config
from tests.gateway import route, run_gateway

pytestmark = pytest.mark.anyio


async def test_readyz_answers_503_once_draining_starts(upstream):
    server, _ = upstream
    async with run_gateway(route("up", "/up", server.url)) as gw, httpx.AsyncClient() as client:
        assert (await client.get(f"{gw.url}/_gatehouse/readyz")).status_code == 200
        gw.app.state.drain.start("test")
        ready = await client.get(f"{gw.url}/_gatehouse/readyz")
        assert ready.status_code == 503
        assert "draining" in ready.json()["detail"]
        assert (await client.get(f"{gw.url}/up/echo")).status_code == 200  # in-flight work still served


def test_the_shutdown_signal_starts_draining_before_uvicorn_stops():
    app = create_app(Settings())
    server = DrainingServer(server_config(app, host="127.0.0.1", port=0), app.state.drain)
    assert not app.state.drain.draining
    server.handle_exit(signal.SIGTERM, None)
    assert app.state.drain.draining and server.should_exit
