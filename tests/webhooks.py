"""Webhook test helpers: a Standard Webhooks signer and a delivery target that records what it gets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import orjson
from starlette.types import Receive, Scope, Send

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A store clock that moves only when told to."""

    def __init__(self, now: datetime = START):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def standard_headers(msg_id: str, body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Standard Webhooks v1 headers for ``body``, as a provider signs them."""
    ts = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


def endpoint(name: str, path: str, target_url: str, **options: Any) -> dict[str, Any]:
    """A Standard Webhooks endpoint delivering to one target named ``svc``."""
    target = {"name": "svc", "url": target_url, "timeout": 2.0, **options.pop("target", {})}
    return {
        "name": name,
        "path": path,
        "verify": {"scheme": "standard", "secrets": [SECRET]},
        "deliver_to": [target],
        **options,
    }


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class RecordingTarget:
    """An ASGI delivery target; ``respond`` picks each answer: (status, headers)."""

    received: list[Received] = field(default_factory=list)
    respond: Callable[[Received], tuple[int, list[tuple[bytes, bytes]]]] = lambda _r: (204, [])
    delay: float = 0.0  # seconds between receiving a delivery and answering it
    before_answer: Callable[[Received], Awaitable[None]] | None = None  # awaited before answering, e.g. to hold it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        record = Received({k.decode(): v.decode() for k, v in scope["headers"]}, body, time.monotonic())
        self.received.append(record)
        if self.before_answer is not None:
            await self.before_answer(record)
        if self.delay:
            await anyio.sleep(self.delay)
        status, headers = self.respond(record)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> None:
        with anyio.fail_after(timeout):
            while len(self.received) < count:
                await anyio.sleep(0.01)


class CountingTarget(RecordingTarget):
    """A RecordingTarget that also records the most attempts it had in flight at once."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.in_flight -= 1


def json_body(payload: Any) -> bytes:
    return orjson.dumps(payload)
