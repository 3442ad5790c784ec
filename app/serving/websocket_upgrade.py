"""uvicorn's ``ws`` protocol, imported at the first WebSocket upgrade instead of at start-up.

uvicorn only ever calls its ``ws`` protocol class, once per upgrade
(``HttpToolsProtocol.handle_websocket_upgrade``), so a function that imports the class
and calls it serves in its place. What the class brings (websockets' sans-I/O and client
modules, uvicorn's protocol, Gatehouse's relay: 32 modules) is 1.8 MiB of RSS that a
gateway which never sees a WebSocket does not pay; the first upgrade pays the import
instead, 10-20 ms on the event loop, once per process.
"""

from __future__ import annotations

import asyncio
from typing import Any


def gatehouse_websocket_protocol(*args: Any, **kwargs: Any) -> asyncio.Protocol:
    """A ``GatehouseWebSocketProtocol`` for one upgrade (``app.serving.websocket_protocol``)."""
    from app.serving.websocket_protocol import GatehouseWebSocketProtocol

    return GatehouseWebSocketProtocol(*args, **kwargs)
