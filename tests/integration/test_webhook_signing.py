"""Signed deliveries: receivers verify Gatehouse with the ``standardwebhooks`` library."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import httpx
import pytest
import standardwebhooks

from app.config.settings import ConfigError, Settings
from tests.gateway import run_gateway
from tests.servers import run_uvicorn
from tests.webhooks import ADMIN_TOKEN, SECRET, RecordingTarget, endpoint, json_body, standard_headers

pytestmark = pytest.mark.anyio

OLD = "whsec_" + "b2xkLXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
NEW = "whsec_" + "bmV3LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
FAST = {"webhook_dispatch_interval": 0.05, "admin_token": ADMIN_TOKEN}
GITHUB_SECRET = "github-secret-for-tests"


def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'webhooks.db'}"


def verify(secret: str, received) -> object:
    return standardwebhooks.Webhook(secret).verify(received.body, received.headers)


async def test_deliveries_are_signed_with_every_secret_and_verify_with_standardwebhooks(tmp_path):
    # The first attempt fails, so the retry shows a fresh timestamp under the same webhook-id.
    target = RecordingTarget(respond=lambda _r: (500, []) if len(target.received) == 1 else (204, []))
    async with run_uvicorn(target) as svc:
        hook = endpoint(
            "std",
            "/hooks/in",
            svc.url,
            target={"signing_secret": [OLD, NEW]},
            retry={"schedule": [1.1], "jitter": 0},
        )
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                body = json_body({"type": "invoice.paid", "n": 1})
                response = await client.post("/hooks/in", content=body, headers=standard_headers("msg_1", body))
                assert response.status_code == 202
            await target.wait_for(2, timeout=15)
    first, retry = target.received
    for received in (first, retry):
        # A receiver holding either secret (mid-rotation) accepts it; one holding neither does not.
        assert verify(OLD, received) == {"type": "invoice.paid", "n": 1}
        assert verify(NEW, received) == {"type": "invoice.paid", "n": 1}
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            verify(SECRET, received)  # the provider's secret: its signature was not passed on
        assert len(received.headers["webhook-signature"].split(" ")) == 2
    assert first.headers["webhook-id"] == retry.headers["webhook-id"] != "msg_1"
    assert int(retry.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    # The body is the provider's, byte for byte: a tampered copy fails.
    tampered = type(first)(first.headers, first.body.replace(b"1", b"2"), first.at)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verify(OLD, tampered)


def github_headers(body: bytes) -> dict[str, str]:
    digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "x-hub-signature-256": f"sha256={digest}",
        "x-github-delivery": "d-1",
        "x-github-event": "push",
        "content-type": "application/json",
    }


async def test_provider_signature_headers_reach_only_a_target_that_asks_for_them(tmp_path):
    plain, asking = RecordingTarget(), RecordingTarget()
    async with run_uvicorn(plain) as plain_svc, run_uvicorn(asking) as asking_svc:
        hook = {
            "name": "gh",
            "path": "/hooks/gh",
            "verify": {"scheme": "github", "secrets": [GITHUB_SECRET]},
            "deliver_to": [
                {"name": "plain", "url": plain_svc.url},
                {"name": "asking", "url": asking_svc.url, "forward_provider_signature": True},
            ],
        }
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            body = json_body({"ref": "refs/heads/main"})
            async with httpx.AsyncClient(base_url=gw.url) as client:
                response = await client.post("/hooks/gh", content=body, headers=github_headers(body))
                assert response.status_code == 202
            await plain.wait_for(1)
            await asking.wait_for(1)
    expected = github_headers(body)["x-hub-signature-256"]
    assert asking.received[0].headers["x-hub-signature-256"] == expected
    assert "x-hub-signature-256" not in plain.received[0].headers
    # Headers that are not signatures reach both.
    assert plain.received[0].headers["x-github-event"] == asking.received[0].headers["x-github-event"] == "push"
    # Without a signing_secret, no Standard Webhooks signature is added.
    assert "webhook-signature" not in plain.received[0].headers


async def test_a_signing_secret_that_is_not_whsec_base64_fails_at_start_up():
    hook = endpoint("std", "/hooks/in", "http://127.0.0.1:9/", target={"signing_secret": "whsec_not base64!"})
    with pytest.raises(ConfigError, match=r"deliver_to\[0\]\.signing_secret") as caught:
        Settings(webhooks=[hook])
    assert "not base64" not in str(caught.value)  # the secret is never echoed
