"""The ops listener (``ops_listen``): the ops endpoints on their own address, in the same process and loop.

Started from the lifespan, so it runs under any server that runs the lifespan
(``gatehouse serve``, plain uvicorn, gunicorn's uvicorn worker); it serves with
the same protocol class as the public port, so slow clients are bounded there
too. It is closed first when the lifespan ends: during a graceful shutdown
``/readyz`` keeps answering 503 here while the public port drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from app.config.server import OpsListen
from app.serving.http_protocol import GatehouseHttpProtocol

log = logging.getLogger("gatehouse")

# Seconds open ops requests get to finish when the listener closes.
CLOSE_GRACE = 2.0


def bind(listen: OpsListen) -> socket.socket:
    """A listening socket on ``listen``; SO_REUSEPORT lets each ``--workers`` process bind the same address."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    reuse_port = hasattr(socket, "SO_REUSEPORT")
    try:
        return socket.create_server((listen.host, listen.port), family=family, reuse_port=reuse_port)
    except OSError as exc:
        raise OSError(exc.errno, f"ops_listen {listen}: {exc.strerror}") from None


@contextlib.asynccontextmanager
async def serve_ops(app: Any, state: Any, listen: OpsListen) -> AsyncIterator[tuple[str, int]]:
    """Serve ``app`` on ``listen`` with ``state`` as every request's lifespan state; yield the bound address."""
    config = uvicorn.Config(
        app,
        http=GatehouseHttpProtocol,
        interface="asgi3",
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        headers=[("server", "gatehouse")],
        access_log=False,
        log_config=None,
    )
    config.load()
    server_state = ServerState()
    server_state.default_headers = config.encoded_headers
    sock = bind(listen)
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            lambda: GatehouseHttpProtocol(config=config, server_state=server_state, app_state=state),
            sock=sock,
            backlog=config.backlog,
        )
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    log.info("ops endpoints on http://%s", OpsListen(host, port))
    try:
        yield host, port
    finally:
        server.close()
        for connection in list(server_state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their answer
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE):
                while server_state.tasks:
                    await asyncio.sleep(0.02)
        for task in list(server_state.tasks):
            task.cancel()
        for connection in list(server_state.connections):
            connection.transport.close()
