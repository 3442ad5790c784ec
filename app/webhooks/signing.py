"""Signing deliveries per Standard Webhooks, and which provider headers are signatures. Pure.

Each attempt carries ``webhook-id`` (the same for every attempt of an event, so a
receiver dedupes with it), ``webhook-timestamp`` (the attempt's time, so a
retry is never stale) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``, one per configured secret, space-separated, so a
receiver holding either the old or the new secret verifies during a rotation.
Receivers verify with any Standard Webhooks library (``standardwebhooks``,
``svix``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

from app.config.webhooks import HmacVerify, VerifyConfig, decode_standard_secret

# The headers a scheme signs with; stripped from deliveries unless a target asks for them.
_SIGNATURE_HEADERS: dict[str, frozenset[bytes]] = {
    "standard": frozenset(
        {b"webhook-id", b"webhook-timestamp", b"webhook-signature", b"svix-id", b"svix-timestamp", b"svix-signature"}
    ),
    "github": frozenset({b"x-hub-signature", b"x-hub-signature-256"}),
    "stripe": frozenset({b"stripe-signature"}),
    "slack": frozenset({b"x-slack-signature", b"x-slack-request-timestamp"}),
    "none": frozenset(),
}
STANDARD_HEADERS = frozenset({b"webhook-id", b"webhook-timestamp", b"webhook-signature"})


def provider_signature_headers(config: VerifyConfig) -> frozenset[bytes]:
    """The header names that carry the provider's signature under ``config``'s scheme."""
    if isinstance(config, HmacVerify):
        return frozenset({config.header.encode("latin-1")})
    return _SIGNATURE_HEADERS[config.scheme]


class DeliverySigner:
    """Signs delivery bodies with a target's secrets (decoded once, at start-up)."""

    def __init__(self, secrets: Sequence[SecretStr]) -> None:
        self._keys = tuple(decode_standard_secret(secret.get_secret_value()) for secret in secrets)

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> list[tuple[bytes, bytes]]:
        message = b"%s.%d.%s" % (msg_id.encode("ascii"), timestamp, body)
        signatures = b" ".join(
            b"v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()) for key in self._keys
        )
        return [
            (b"webhook-id", msg_id.encode("ascii")),
            (b"webhook-timestamp", str(timestamp).encode("ascii")),
            (b"webhook-signature", signatures),
        ]


def message_id(event_id: int) -> str:
    """The ``webhook-id`` of every delivery of one event: stable across attempts and targets."""
    return f"msg_gatehouse_{event_id}"
