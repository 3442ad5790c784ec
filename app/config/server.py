"""How Gatehouse treats client connections, and where its ops endpoints are served.

``ServerSettings`` (the ``server:`` block) bounds what one client connection may
hold: the time to send a request's header block, the idle time between requests
on a keep-alive connection, and how many connections a process keeps open.
``OpsListen`` parses ``ops_listen`` (``host:port``), the separate listener for
the ops endpoints.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, NamedTuple

from pydantic import BeforeValidator, Field

from app.config.base import ConfigModel


class ServerSettings(ConfigModel):
    """Client-connection limits, per process (``app.serving.limits``; ``hypercorn_limits`` under hypercorn)."""

    # Seconds from the first byte of a request (or from accepting the connection) to the end of its
    # header block; past it the client gets 408 and the connection is closed (slowloris).
    header_timeout: float = Field(10.0, gt=0)
    # Seconds an idle keep-alive connection is kept open between two requests.
    keepalive_timeout: float = Field(5.0, gt=0)
    # Open client connections per process; a connection over it is answered 503 and closed.
    max_connections: int = Field(1000, ge=1)


class OpsListen(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: object) -> object:
    """``"127.0.0.1:9000"``, ``"[::1]:9000"`` or ``":9000"`` (all interfaces) -> ``OpsListen``.

    Port 0 takes any free port (the tests do); the bound address is logged and kept in the lifespan state.
    """
    if not isinstance(value, str):
        return value
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("must be host:port, e.g. 127.0.0.1:9000 (port 0: any free port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets, e.g. [::1]:9000")
    if not host or host == "*":
        host = "0.0.0.0"
    return OpsListen(host, int(port))


OpsListenSetting = Annotated[OpsListen, BeforeValidator(parse_listen)]
