"""Webhook intake: verify → persist → acknowledge → hand to the dispatcher. Plain ASGI.

``WebhookIntake`` owns the exact paths of the configured endpoints; ``GatehouseApp``
looks the path up in it before the proxy, so intake costs the proxy nothing.
The answer is sent only after the event and its deliveries are committed
(group commit: concurrent intakes share one transaction, ``app.webhooks.batching``):
``202`` for a new event, ``200`` for a repeat of a provider event id, ``503`` with
``Retry-After`` when the store fails (never a 4xx for our own failure, or the
provider would drop the event).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from starlette.types import Receive, Scope, Send

from app.config.webhooks import WebhookEndpoint
from app.errors import (
    GatewayError,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
    WebhookRejected,
    WebhookStoreUnavailable,
    send_problem,
)
from app.observability.metrics import Metrics
from app.webhooks.event_types import event_type, takes
from app.webhooks.failures import StoreError
from app.webhooks.records import NewEvent
from app.webhooks.signatures import SignatureError, Verifier, build_verifier, provider_event_id
from app.wire import HOP_BY_HOP, header_value, sane_request_id

if TYPE_CHECKING:
    from app.webhooks.runtime import Webhooks

log = logging.getLogger("gatehouse.webhooks")

STORE_RETRY_AFTER = 5  # seconds a provider is asked to wait after a 503 of ours
# Headers never stored or passed on: per-connection, or credentials meant for Gatehouse itself.
_NOT_KEPT = HOP_BY_HOP | {b"host", b"content-length", b"expect", b"authorization", b"cookie"}


@dataclass(frozen=True, slots=True)
class _Endpoint:
    config: WebhookEndpoint
    verifier: Verifier


def headers_worth_keeping(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name not in _NOT_KEPT]


class WebhookIntake:
    """The ASGI app behind every webhook path; the store and dispatcher come from lifespan state."""

    def __init__(self, endpoints: Sequence[WebhookEndpoint], metrics: Metrics | None = None) -> None:
        self._metrics = metrics  # counts each webhook received, by endpoint and outcome
        self._by_path = {endpoint.path: _Endpoint(endpoint, build_verifier(endpoint.verify)) for endpoint in endpoints}

    def handles(self, path: str) -> bool:
        return path in self._by_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._by_path[scope["path"]]
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed("Webhook endpoints take POST only.", allow=b"POST")
            body = await _read_body(scope, receive, endpoint.config.max_body_bytes)
            try:
                endpoint.verifier.verify(scope["headers"], body, now=time.time())
            except SignatureError as exc:
                raise WebhookRejected(f"Webhook verification failed: {exc.check} ({exc}).", check=exc.check) from None
            event_id = provider_event_id(endpoint.config.verify, endpoint.config.dedupe, scope["headers"], body)
            webhooks: Webhooks = scope["state"]["webhooks"]
            headers = headers_worth_keeping(scope["headers"])
            kind = event_type(endpoint.config.event_type_source, scope["headers"], body)
            targets = tuple(t.name for t in endpoint.config.deliver_to if takes(t, kind))
            # Leased to this process as they are stored when it can attempt them at once: no claim after.
            # A busy target's deliveries (at its cap or rate, its breaker open) are left to the poller.
            ready = [not webhooks.dispatcher.busy(endpoint.config.name, target) for target in targets]
            lease = webhooks.dispatcher.reserve(len(targets)) if targets and all(ready) else None
            reserved = len(targets) if lease is not None else 0
            try:
                new = NewEvent(endpoint.config.name, event_id, headers, body, targets, kind, lease)
                recorded = await webhooks.writer.record(new)
            except StoreError as exc:
                webhooks.dispatcher.release(reserved)
                log.error("webhook %s: could not store an event: %s", endpoint.config.name, exc)
                raise WebhookStoreUnavailable(
                    "The webhook could not be stored; retry later.", retry_after=STORE_RETRY_AFTER
                ) from None
            except BaseException:
                webhooks.dispatcher.release(reserved)
                raise
        except GatewayError as exc:
            self._count(endpoint, "rejected" if exc.status < 500 else "unavailable")
            await _answer_problem(exc, scope, send)
            return
        if recorded.duplicate:
            webhooks.dispatcher.release(reserved)
            self._count(endpoint, "duplicate")
            await _answer(send, 200, {"status": "duplicate", "event_id": recorded.event_id})
            return
        self._count(endpoint, "accepted")
        try:
            await _answer(send, 202, {"status": "accepted", "event_id": recorded.event_id})
        finally:
            # After the answer: the sender's deadline is met, the attempt starts at once.
            if lease is not None:
                webhooks.dispatcher.deliver_claimed(recorded.claimed, reserved)
            else:
                webhooks.dispatcher.deliver_soon(i for i, r in zip(recorded.delivery_ids, ready, strict=True) if r)

    def _count(self, endpoint: _Endpoint, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook_received(endpoint.config.name, outcome)


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refusing with 413 as soon as it is known to pass ``limit``."""
    value = header_value(scope["headers"], b"content-length")
    declared = int(value) if value is not None and value.isdigit() else 0
    if declared > limit:
        raise PayloadTooLarge(f"The webhook body ({declared} bytes) exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestTimeout("The sender went away before the body was complete.")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The webhook body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send: Send, status: int, payload: dict[str, object]) -> None:
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _answer_problem(exc: GatewayError, scope: Scope, send: Send) -> None:
    level = logging.WARNING if exc.status >= 500 or exc.status == 401 else logging.INFO
    log.log(level, "%s %s -> %d %s", scope["method"], scope["path"], exc.status, exc.detail)
    if isinstance(exc, PayloadTooLarge):
        exc.headers.append((b"connection", b"close"))  # the rest of the body is never read
    request_id = sane_request_id(header_value(scope["headers"], b"x-request-id")).decode()
    await send_problem(send, exc, instance=scope["path"], request_id=request_id)
