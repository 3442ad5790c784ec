"""Credentials Gatehouse presents to an upstream, as ``httpx.Auth`` classes.

Built once per route at start-up and handed to ``client.send(..., auth=)`` by
the ``upstream_auth`` filter (``app.edge.credentials``); webhook delivery uses
them too. OAuth2 tokens are fetched with the shared general-purpose client (not
the upstream's pool), cached until shortly before they expire, and fetched once
however many requests need one at the same time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass

import httpx

from app.config.edge import (
    BasicUpstreamAuth,
    BearerUpstreamAuth,
    HmacUpstreamAuth,
    OAuth2ClientCredentials,
    UpstreamAuth,
)
from app.errors import UpstreamError


class BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._value = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["authorization"] = self._value
        yield request


class HmacSigningAuth(httpx.Auth):
    """``signature = hex(HMAC-SHA256(secret, METHOD \\n PATH?QUERY \\n TIMESTAMP \\n hex(SHA256(body))))``.

    The body has to be read whole to be hashed, so a signed route buffers its
    request bodies (bounded by ``max_body_bytes``).
    """

    requires_request_body = True

    def __init__(self, spec: HmacUpstreamAuth) -> None:
        self._key = spec.key().get_secret_value().encode()
        self._key_id = spec.key_id
        self._signature_header = spec.signature_header
        self._timestamp_header = spec.timestamp_header
        self._key_id_header = spec.key_id_header

    def signature(self, method: str, target: bytes, timestamp: str, body: bytes) -> str:
        message = b"\n".join([method.encode(), target, timestamp.encode(), hashlib.sha256(body).hexdigest().encode()])
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = str(int(time.time()))
        request.headers[self._timestamp_header] = timestamp
        request.headers[self._signature_header] = self.signature(
            request.method, request.url.raw_path, timestamp, request.content
        )
        if self._key_id is not None:
            request.headers[self._key_id_header] = self._key_id
        yield request


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float  # time.monotonic()


class OAuth2ClientCredentialsAuth(httpx.Auth):
    """Client-credentials grant; on a 401 from the upstream the token is renewed and the request retried once.

    Only a request whose body can be sent again (none, or already buffered) is
    retried: a streamed body has gone to the upstream and cannot be replayed.
    """

    def __init__(self, spec: OAuth2ClientCredentials, http: Callable[[], httpx.AsyncClient]) -> None:
        self._spec = spec
        self._http = http
        self._secret = spec.secret()
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:  # noqa: ARG002
        raise RuntimeError("OAuth2ClientCredentialsAuth works with httpx.AsyncClient only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and isinstance(request.stream, httpx.ByteStream):
            token = await self.token(rejected=token)
            request.headers["authorization"] = f"Bearer {token}"
            yield request

    async def token(self, *, rejected: str | None = None) -> str:
        current = self._token
        if current is not None and current.value != rejected and time.monotonic() < current.renew_at:
            return current.value
        async with self._lock:
            # Whoever held the lock before may have fetched the token this caller needs.
            current = self._token
            if current is not None and current.value != rejected and time.monotonic() < current.renew_at:
                return current.value
            self._token = await self._fetch()
            return self._token.value

    async def _fetch(self) -> _Token:
        spec = self._spec
        form = {"grant_type": "client_credentials"}
        if spec.scope:
            form["scope"] = spec.scope
        if spec.audience:
            form["audience"] = spec.audience
        self.fetches += 1
        try:
            response = await self._http().post(
                spec.token_url,
                data=form,
                auth=httpx.BasicAuth(spec.client_id, self._secret.get_secret_value()),
                headers={"accept": "application/json"},
            )
            response.raise_for_status()
            payload = response.json()
            value = payload["access_token"]
            lifetime = float(payload.get("expires_in", 300))
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"Could not obtain an upstream token from {spec.token_url} ({exc}).") from exc
        if not isinstance(value, str) or not value:
            raise UpstreamError(f"The token endpoint {spec.token_url} returned no access_token.")
        # Renew ahead of expiry; a very short-lived token is renewed at half its life.
        ahead = min(spec.refresh_before_seconds, lifetime / 2)
        return _Token(value, time.monotonic() + lifetime - ahead)


def build_upstream_auth(spec: UpstreamAuth, http: Callable[[], httpx.AsyncClient]) -> httpx.Auth:
    if isinstance(spec, BearerUpstreamAuth):
        return BearerAuth(spec.token().get_secret_value())
    if isinstance(spec, BasicUpstreamAuth):
        return httpx.BasicAuth(spec.username, spec.secret().get_secret_value())
    if isinstance(spec, OAuth2ClientCredentials):
        return OAuth2ClientCredentialsAuth(spec, http)
    return HmacSigningAuth(spec)
