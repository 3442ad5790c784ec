"""Draining: /readyz turns 503 the moment shutdown begins."""

from __future__ import annotations

import signal
import time

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


def test_drain_delay_holds_uvicorn_back_and_a_second_signal_does_not_wait():
    app = create_app(Settings())
    server = DrainingServer(server_config(app, host="127.0.0.1", port=0), app.state.drain, drain_delay=0.3)
    server.handle_exit(signal.SIGTERM, None)
    assert app.state.drain.draining and not server.should_exit  # still listening, /readyz says 503
    deadline = time.monotonic() + 10
    while not server.should_exit and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.should_exit and not server.force_exit
    time.sleep(0.4)
    assert not server.force_exit  # the delayed call came once

    app = create_app(Settings())
    impatient = DrainingServer(server_config(app, host="127.0.0.1", port=0), app.state.drain, drain_delay=30)
    impatient.handle_exit(signal.SIGINT, None)
    impatient.handle_exit(signal.SIGINT, None)  # Ctrl-C twice: stop now
    assert impatient.should_exit and not impatient.force_exit
    impatient.handle_exit(signal.SIGINT, None)
    assert impatient.force_exit
