"""Where a route's WebSocket goes, and the limits it lives under.

A WebSocket on a pooled route takes a target as a request does (balancing,
health, breaker) and counts as in flight on it until it closes, so
``least_connections`` spreads long-lived sockets too. A failed handshake counts
against the target; a WebSocket is never retried on another target, because
the client's handshake is answered once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.config.websocket import WebSocketSettings
from app.errors import UpstreamError
from app.outbound.websocket import HandshakeRefused, UpstreamConnection, open_websocket, websocket_url
from app.proxy.routing import CompiledRoute
from app.proxy.websocket import RelayLimits
from app.resilience.endpoint import FAILURE_STATUSES
from app.resilience.targets import TargetPool


def relay_limits(spec: WebSocketSettings) -> RelayLimits:
    return RelayLimits(
        max_message_bytes=spec.max_message_bytes,
        idle_timeout=spec.idle_timeout,
        max_lifetime=spec.max_lifetime,
    )


@dataclass(slots=True)
class UpstreamWebSocket:
    """An open upstream connection; ``release`` must run once it has closed."""

    connection: UpstreamConnection
    origin: str
    release: Callable[[], None]


async def connect_upstream(
    route: CompiledRoute,
    spec: WebSocketSettings,
    pool: TargetPool | None,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    subprotocols: Sequence[str],
    *,
    relay_control: bool = False,
) -> UpstreamWebSocket:
    """Open the upstream side for ``route`` (``target``: path and query); raises gateway errors or refusals.

    ``relay_control``: the client's side carries pings and pongs (``open_websocket``).
    """

    async def open_to(origin: str) -> UpstreamConnection:
        try:
            return await open_websocket(
                websocket_url(origin, target),
                headers=headers,
                subprotocols=subprotocols,
                verify=route.verify,
                client_cert=route.client_cert,
                connect_timeout=route.timeouts.connect,
                max_message_bytes=spec.max_message_bytes,
                compression=spec.compression,
                relay_control=relay_control,
            )
        except HandshakeRefused as refused:
            refused.origin = origin
            raise

    if pool is None:
        origin = route.upstream.origin
        return UpstreamWebSocket(await open_to(origin), origin, lambda: None)
    chosen = pool.choose()
    if chosen is None:
        raise pool.unavailable()
    chosen.in_flight += 1
    try:
        connection = await open_to(chosen.upstream.origin)
    except UpstreamError as exc:
        chosen.finished()
        pool.record_failure(chosen, exc.detail)
        raise
    except HandshakeRefused as exc:
        chosen.finished()
        if exc.status in FAILURE_STATUSES:
            pool.record_failure(chosen, f"status {exc.status}")
        else:
            pool.record_success(chosen)
        raise
    except BaseException:
        chosen.finished()
        raise
    pool.record_success(chosen)
    return UpstreamWebSocket(connection, chosen.upstream.origin, chosen.finished)
