"""What each delivery attempt sends: the parts that are the same for every attempt to a target
are worked out once, at start-up, and completed per delivery.

An attempt carries the stored body and headers (less those the target, the dispatcher or
the signer sets, and the provider's signature unless the target forwards it), the target's
own headers, ``User-Agent`` and the ``X-Gatehouse-*`` headers, and with a ``signing_secret`` a
Standard Webhooks signature. The request is built here rather than by ``client.post``:
``build_request`` copies and merges the client's headers and cookies and parses the timeout
on every call (about a tenth of an attempt's CPU). It still goes out through
``client.send``, so the target's ``upstream_auth``, the client's event hooks and its
transport apply as before; the client's default headers (``Accept``, ...) are merged in as
``build_request`` does, ours winning.
"""

from __future__ import annotations

import time

import httpx

from app.config.webhooks import DeliveryTarget, WebhookEndpoint
from app.outbound.auth import build_upstream_auth
from app.webhooks.records import ClaimedDelivery
from app.webhooks.signing import STANDARD_HEADERS, DeliverySigner, message_id, provider_signature_headers

# Headers the dispatcher sets itself; stored ones with these names are not passed on.
_OWN_HEADERS = frozenset(
    {
        b"x-gatehouse-event-id",
        b"x-gatehouse-provider-event-id",
        b"x-gatehouse-delivery-id",
        b"x-gatehouse-attempt",
        b"x-gatehouse-endpoint",
        b"user-agent",
    }
)


class TargetRequests:
    """Builds the attempts to one target; see the module docstring."""

    __slots__ = ("url", "auth", "_drop", "_fixed", "_defaults", "_endpoint", "_timeout", "_signer", "_host", "_framed")

    def __init__(self, endpoint: WebhookEndpoint, target: DeliveryTarget, http: httpx.AsyncClient) -> None:
        # Parsed once: httpx parses a str URL on every request (~10 us, a few percent of an attempt).
        self.url = httpx.URL(target.url)
        self.auth = build_upstream_auth(target.upstream_auth, lambda: http) if target.upstream_auth else None
        self._signer = DeliverySigner(target.signing_secret) if target.signing_secret is not None else None
        target_headers = target.raw_headers
        drop = {name for name, _ in target_headers} | _OWN_HEADERS
        if not target.forward_provider_signature:
            drop |= provider_signature_headers(endpoint.verify)
        if self._signer is not None:
            drop |= STANDARD_HEADERS  # ours, never the provider's of the same name
        self._drop = frozenset(drop)
        self._fixed = [*target_headers, (b"user-agent", b"gatehouse-webhooks")]
        ours = {name for name, _ in self._fixed} | _OWN_HEADERS | (STANDARD_HEADERS if self._signer else set())
        # The client's defaults (as they are now) that none of ours replaces; a stored header of the
        # same name still does.
        self._defaults = [(name, value) for name, value in http.headers.raw if name.lower() not in ours]
        self._endpoint = (b"x-gatehouse-endpoint", endpoint.name.encode())
        self._timeout = httpx.Timeout(target.timeout).as_dict()
        # The headers httpx adds to a request given its content (``Request._prepare``), added here
        # instead: given a stream, httpx adds none and normalises the header list once, not twice.
        names = {name for name, _ in target_headers}
        self._host = [] if b"host" in names or not self.url.host else [(b"Host", self.url.netloc)]
        self._framed = b"content-length" in names or b"transfer-encoding" in names

    def request(self, claimed: ClaimedDelivery) -> httpx.Request:
        """The POST for this attempt of ``claimed``."""
        delivery = claimed.delivery
        drop = self._drop
        headers = [(name, value) for name, value in claimed.headers if name not in drop]
        if self._defaults:
            stored = {name.lower() for name, _ in headers}
            headers[:0] = [header for header in self._defaults if header[0].lower() not in stored]
        headers += self._fixed
        headers += [
            (b"x-gatehouse-event-id", str(delivery.event_id).encode()),
            (b"x-gatehouse-delivery-id", str(delivery.id).encode()),
            (b"x-gatehouse-attempt", str(delivery.attempts).encode()),
            self._endpoint,
        ]
        if claimed.provider_event_id is not None:
            headers.append((b"x-gatehouse-provider-event-id", claimed.provider_event_id.encode("utf-8")))
        if self._signer is not None:
            headers += self._signer.headers(message_id(delivery.event_id), int(time.time()), claimed.body)
        body = claimed.body
        if not self._framed:
            if body:
                headers.append((b"Content-Length", str(len(body)).encode()))
            else:
                headers.insert(0, (b"Content-Length", b"0"))
        request = httpx.Request(
            "POST",
            self.url,
            headers=self._host + headers,
            stream=httpx.ByteStream(body),
            extensions={"timeout": self._timeout},
        )
        request.read()  # as httpx does for content given whole: request.content is there for auth and hooks
        return request
