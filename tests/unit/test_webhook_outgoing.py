"""TargetRequests builds the very request ``client.post`` built before it (no sockets)."""

from datetime import UTC, datetime

import httpx
import pytest

import app.webhooks.outgoing as outgoing
from app.config.webhooks import WebhookEndpoint
from app.webhooks.outgoing import TargetRequests
from app.webhooks.records import ClaimedDelivery, Delivery
from app.webhooks.signing import STANDARD_HEADERS, DeliverySigner, message_id, provider_signature_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = 1_700_000_000
OWN = {
    b"x-gatehouse-event-id",
    b"x-gatehouse-provider-event-id",
    b"x-gatehouse-delivery-id",
    b"x-gatehouse-attempt",
    b"x-gatehouse-endpoint",
    b"user-agent",
}


def claimed(body: bytes, provider_event_id: str | None) -> ClaimedDelivery:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    delivery = Delivery(7, 3, "std", "svc", "delivering", 2, at, "me", at, None, None, at, at)
    stored = [
        (b"content-type", b"application/json"),
        (b"accept", b"application/vnd.test+json"),
        (b"webhook-signature", b"v1,provider"),
        (b"x-gatehouse-attempt", b"99"),
        (b"x-tenant", b"provider"),
    ]
    return ClaimedDelivery(delivery, provider_event_id, stored, body)


def before(client: httpx.AsyncClient, endpoint: WebhookEndpoint, claim: ClaimedDelivery) -> httpx.Request:
    """What the dispatcher sent before TargetRequests: its header list, through ``client.build_request``."""
    target, delivery = endpoint.deliver_to[0], claim.delivery
    signer = DeliverySigner(target.signing_secret) if target.signing_secret else None
    own = {name for name, _ in target.raw_headers} | OWN
    if not target.forward_provider_signature:
        own |= provider_signature_headers(endpoint.verify)
    if signer is not None:
        own |= STANDARD_HEADERS
    headers = [(name, value) for name, value in claim.headers if name not in own]
    headers += target.raw_headers
    headers += [
        (b"user-agent", b"gatehouse-webhooks"),
        (b"x-gatehouse-event-id", str(delivery.event_id).encode()),
        (b"x-gatehouse-delivery-id", str(delivery.id).encode()),
        (b"x-gatehouse-attempt", str(delivery.attempts).encode()),
        (b"x-gatehouse-endpoint", delivery.endpoint.encode()),
    ]
    if claim.provider_event_id is not None:
        headers.append((b"x-gatehouse-provider-event-id", claim.provider_event_id.encode()))
    if signer is not None:
        headers += signer.headers(message_id(delivery.event_id), NOW, claim.body)
    return client.build_request("POST", target.url, content=claim.body, headers=headers, timeout=target.timeout)


@pytest.mark.parametrize("body", [b'{"n": 1}', b""])
@pytest.mark.parametrize("provider_event_id", ["msg_1", None])
@pytest.mark.parametrize(
    "target",
    [
        {},
        {"signing_secret": [SECRET], "headers": {"X-Tenant": "blue"}},
        {"forward_provider_signature": True, "headers": {"Host": "svc.internal", "Accept": "text/plain"}},
        {"headers": {"content-length": "5"}, "url": "https://svc.example:8443/in?x=1"},
    ],
)
def test_an_attempt_is_the_request_client_post_built(monkeypatch, target, provider_event_id, body):
    monkeypatch.setattr(outgoing.time, "time", lambda: NOW + 0.5)
    endpoint = WebhookEndpoint.model_validate(
        {
            "name": "std",
            "path": "/hooks/in",
            "verify": {"scheme": "standard", "secrets": [SECRET]},
            "deliver_to": [{"name": "svc", "url": "http://127.0.0.1:9/in", "timeout": 1.5} | target],
        }
    )
    client = httpx.AsyncClient()
    claim = claimed(body, provider_event_id)
    got = TargetRequests(endpoint, endpoint.deliver_to[0], client).request(claim)
    want = before(client, endpoint, claim)
    assert (got.method, got.url, got.headers.raw, got.content) == (
        want.method,
        want.url,
        want.headers.raw,
        want.content,
    )
    assert got.extensions == want.extensions
