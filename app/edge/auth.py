"""Inbound auth: who is calling. One verifier per route, built at start-up.

A verifier reads the caller's credentials from the exchange and returns the
caller's identity (key name, JWT subject, user name), or raises
``Unauthorized`` (401, with a ``WWW-Authenticate`` challenge) when they are
missing or invalid, ``Forbidden`` (403) when they are valid but not enough.
``AuthFilter`` then removes the credentials before the request goes upstream
(unless ``forward_credentials``) and passes the identity in a header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from typing import Protocol
from urllib.parse import quote, unquote_to_bytes

import anyio
import httpx

from app.config.edge import ApiKeyAuth, BasicAuth, InboundAuth, JwtAuth, MtlsAuth
from app.config.hashing import key_digest, parse_key_hash, parse_password_hash, verify_password
from app.errors import Forbidden, Unauthorized
from app.outbound.urls import exact_url, path_and_query
from app.proxy.exchange import Exchange, Handler
from app.wire import header_value


class Verifier(Protocol):
    credential_header: bytes | None  # removed before forwarding unless forward_credentials
    credential_query_param: bytes | None

    async def verify(self, exchange: Exchange) -> str: ...


def query_value(query: bytes, name: bytes) -> bytes | None:
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if unquote_to_bytes(key) == name:
            return unquote_to_bytes(value.replace(b"+", b" "))
    return None


def without_query_param(url: httpx.URL, name: bytes) -> httpx.URL:
    """``url`` without the ``name`` parameter; the rest of the query byte for byte."""
    path, query = path_and_query(url)
    pairs = (query or "").split("&")
    kept = [pair for pair in pairs if pair and unquote_to_bytes(pair.partition("=")[0]) != name]
    return exact_url(url, path, "&".join(kept) or None)


def header_safe(identity: str) -> bytes:
    """The identity as a header value: anything outside printable ASCII is percent-encoded (no CR/LF injection)."""
    return quote(identity, safe=_HEADER_SAFE).encode("ascii")


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class ApiKeyVerifier:
    def __init__(self, spec: ApiKeyAuth) -> None:
        self.credential_header = spec.header.lower().encode() if spec.header else None
        self.credential_query_param = spec.query_param.encode() if spec.query_param else None
        self._keys = [(name, parse_key_hash(h.get_secret_value())) for name, h in spec.keys.items()]
        where = f'header="{spec.header}"' if spec.header else f'query="{spec.query_param}"'
        self._challenge = f'ApiKey realm="gatehouse", {where}'.encode()

    async def verify(self, exchange: Exchange) -> str:
        key = None
        if self.credential_header is not None:
            key = header_value(exchange.headers, self.credential_header)
        if key is None and self.credential_query_param is not None:
            key = query_value(exchange.url.query, self.credential_query_param)
        if not key:
            raise Unauthorized("An API key is required.", challenge=self._challenge)
        digest = key_digest(key)
        found = None
        for name, expected in self._keys:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(digest, expected):
                found = name
        if found is None:
            raise Unauthorized("The API key is not valid.", challenge=self._challenge)
        return found


class BasicVerifier:
    """HTTP Basic against PBKDF2 hashes; hashing runs in a worker thread, good pairs are remembered."""

    _CACHE_SIZE = 1024

    def __init__(self, spec: BasicAuth) -> None:
        self.credential_header: bytes | None = b"authorization"
        self.credential_query_param: bytes | None = None
        self._users = {name: parse_password_hash(h.get_secret_value()) for name, h in spec.users.items()}
        # Unknown users are checked against a dummy hash so that timing does not reveal which names exist.
        self._dummy = next(iter(self._users.values()))
        self._verified: dict[bytes, str] = {}
        self._challenge = f'Basic realm="{spec.realm}", charset="UTF-8"'.encode()

    async def verify(self, exchange: Exchange) -> str:
        value = header_value(exchange.headers, b"authorization")
        scheme, _, encoded = (value or b"").partition(b" ")
        if value is None or scheme.lower() != b"basic":
            raise Unauthorized("Basic credentials are required.", challenge=self._challenge)
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Unauthorized("The Basic credentials are malformed.", challenge=self._challenge) from None
        user_bytes, colon, password = decoded.partition(b":")
        if not colon:
            raise Unauthorized("The Basic credentials are malformed.", challenge=self._challenge)
        # Keyed on a hash of the pair, so no plain password is kept in memory.
        cache_key = hashlib.sha256(decoded).digest()
        known = self._verified.get(cache_key)
        if known is not None:
            return known
        user = user_bytes.decode("utf-8", "replace")
        stored = self._users.get(user)
        ok = await anyio.to_thread.run_sync(verify_password, password, stored or self._dummy)
        if stored is None or not ok:
            raise Unauthorized("The user name or password is not valid.", challenge=self._challenge)
        if len(self._verified) >= self._CACHE_SIZE:
            self._verified.clear()
        self._verified[cache_key] = user
        return user


class MtlsVerifier:
    """The identity is the subject of the client certificate the TLS handshake verified.

    Without one the answer is 403, not 401: there is no HTTP challenge that
    makes a client present a certificate on a connection already open.
    """

    credential_header: bytes | None = None
    credential_query_param: bytes | None = None

    def __init__(self, spec: MtlsAuth) -> None:
        self._subjects = frozenset(spec.subjects) if spec.subjects is not None else None

    async def verify(self, exchange: Exchange) -> str:
        subject = exchange.client_cert_subject
        if subject is None:
            raise Forbidden("A TLS client certificate is required.")
        if self._subjects is not None and subject not in self._subjects:
            raise Forbidden("This client certificate is not allowed on this route.")
        return subject


def build_verifier(spec: InboundAuth, http: Callable[[], httpx.AsyncClient]) -> Verifier:
    if isinstance(spec, MtlsAuth):
        return MtlsVerifier(spec)
    if isinstance(spec, ApiKeyAuth):
        return ApiKeyVerifier(spec)
    if isinstance(spec, JwtAuth):
        # Imported here: PyJWT and ``cryptography`` are loaded only when a route uses JWT auth.
        from app.edge.tokens import JwtVerifier

        return JwtVerifier(spec, http)
    return BasicVerifier(spec)


class AuthFilter:
    """Verify the caller; strip its credentials; pass its identity upstream."""

    def __init__(self, spec: InboundAuth, verifier: Verifier) -> None:
        self._verify = verifier.verify
        identity = spec.identity_header.lower().encode() if spec.identity_header else None
        # The identity header is always dropped from the client's request: only the gateway may set it.
        drop = {identity} if identity else set()
        self._strip_query: bytes | None = None
        if not spec.forward_credentials:
            if verifier.credential_header is not None:
                drop.add(verifier.credential_header)
            self._strip_query = verifier.credential_query_param
        self._drop = frozenset(drop)
        self._identity_header = identity

    async def __call__(self, exchange: Exchange, call_next: Handler) -> httpx.Response:
        identity = await self._verify(exchange)
        exchange.identity = identity
        if self._drop:
            exchange.headers = [(k, v) for k, v in exchange.headers if k not in self._drop]
        if self._identity_header is not None:
            exchange.headers.append((self._identity_header, header_safe(identity)))
        if self._strip_query is not None and exchange.url.query:
            exchange.url = without_query_param(exchange.url, self._strip_query)
        return await call_next(exchange)
