"""Settings for proxied WebSockets: per-route limits on messages, idleness and lifetime."""

from __future__ import annotations

from pydantic import Field

from app.config.base import ConfigModel

# The largest message any route may allow. The server's frame parser refuses bigger frames
# (close 1009) before buffering them, whatever the route says.
MAX_MESSAGE_BYTES_CAP = 16 * 1024 * 1024


class WebSocketSettings(ConfigModel):
    """A route's WebSocket limits; ``websocket: false`` on a route refuses WebSocket handshakes there.

    ``max_message_bytes`` bounds one message in either direction (larger: close 1009);
    ``idle_timeout`` closes a connection on which no message moved either way for that long;
    ``max_lifetime`` closes any connection that old (both with 1001, "going away");
    ``compression`` offers permessage-deflate to the upstream. It is off by default: a client
    library inflates every frame of a network read before anyone reads a message, so a few
    kilobytes of well-compressed frames from a hostile upstream would become gigabytes of
    queued messages, whatever the queue's length in messages.
    """

    max_message_bytes: int = Field(1024 * 1024, ge=1, le=MAX_MESSAGE_BYTES_CAP)
    idle_timeout: float = Field(300.0, gt=0)
    max_lifetime: float = Field(86400.0, gt=0)
    compression: bool = False
