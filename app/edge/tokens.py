"""JWT bearer tokens, verified with pyjwt; keys from settings or a JWKS URL.

The JWKS is fetched with the shared client and cached for ``jwks_cache_seconds``;
a token whose ``kid`` is not in the cache triggers one refetch (at most every
``jwks_min_refresh_seconds``, so junk kids cannot make the gateway hammer the
key server), which is how rotated keys are picked up without a restart.
Concurrent refreshes share one fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from app.config.edge import JwtAuth
from app.errors import Forbidden, Unauthorized, UpstreamError
from app.proxy.exchange import Exchange

log = logging.getLogger("gatehouse.edge")


class JwksCache:
    def __init__(self, url: str, ttl: float, min_refresh: float, http: Callable[[], httpx.AsyncClient]) -> None:
        self._url = url
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._http = http
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        now = time.monotonic()
        if now - self._fetched_at > self._ttl:
            await self._refresh(now)
        key = self._lookup(kid)
        if key is None and time.monotonic() - self._fetched_at >= self._min_refresh:
            await self._refresh(time.monotonic())  # an unknown kid: the keys may have rotated
            key = self._lookup(kid)
        if key is None:
            raise Unauthorized(f"No known key has the token's kid {kid!r}.", challenge=_invalid("unknown key"))
        return key

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))  # a token without kid, and only one key to try
        return key

    async def _refresh(self, asked_at: float) -> None:
        async with self._lock:
            if self._fetched_at >= asked_at:
                return  # another request refreshed while this one waited
            try:
                response = await self._http().get(self._url, headers={"accept": "application/json"})
                response.raise_for_status()
                keys = _parse_jwks(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
                if not self._keys:
                    raise UpstreamError(f"The JWKS at {self._url} could not be fetched.") from exc
                log.warning("JWKS refresh from %s failed (%s); keeping the cached keys", self._url, exc)
                self._fetched_at = time.monotonic()  # retry after ttl/min_refresh, not on every request
                return
            self._keys = keys
            self._fetched_at = time.monotonic()


def _parse_jwks(data: Any) -> dict[str | None, jwt.PyJWK]:
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in data["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry.get("kid")] = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
            log.warning("skipping unusable JWK %r: %s", entry.get("kid"), exc)
    return keys


def _invalid(description: str) -> bytes:
    return f'Bearer realm="gatehouse", error="invalid_token", error_description="{description}"'.encode()


_MISSING = b'Bearer realm="gatehouse"'


class JwtVerifier:
    def __init__(self, spec: JwtAuth, http: Callable[[], httpx.AsyncClient]) -> None:
        self.credential_header: bytes | None = b"authorization"
        self.credential_query_param: bytes | None = None
        self._spec = spec
        self._algorithms: list[str] = list(spec.algorithms)
        self._static_key: Any = None
        if spec.secret is not None:
            self._static_key = spec.secret.get_secret_value().encode()
        elif spec.public_key is not None:
            self._static_key = load_pem_public_key(spec.public_key.encode())
        self._jwks = (
            JwksCache(spec.jwks_url, spec.jwks_cache_seconds, spec.jwks_min_refresh_seconds, http)
            if spec.jwks_url
            else None
        )
        self._require = ["exp", *spec.required_claims]
        self._audience = spec.audience
        self._scopes = frozenset(spec.required_scopes)

    async def verify(self, exchange: Exchange) -> str:
        value = None
        for name, field in exchange.headers:
            if name == b"authorization":
                value = field
                break
        scheme, _, token_bytes = (value or b"").partition(b" ")
        if value is None or scheme.lower() != b"bearer" or not token_bytes.strip():
            raise Unauthorized("A bearer token is required.", challenge=_MISSING)
        token = token_bytes.strip().decode("ascii", "replace")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthorized("The bearer token is malformed.", challenge=_invalid("malformed token")) from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise Unauthorized(
                f"The token's algorithm {algorithm!r} is not accepted.", challenge=_invalid("algorithm not accepted")
            )
        algorithms = self._algorithms
        if self._jwks is not None:
            jwk = await self._jwks.key_for(header.get("kid"))
            if jwk.algorithm_name not in self._algorithms:
                raise Unauthorized("The token's key is not for an accepted algorithm.", challenge=_invalid("bad key"))
            key: Any = jwk.key
            algorithms = [jwk.algorithm_name]  # the key decides the algorithm, never the token alone
        else:
            key = self._static_key
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._spec.issuer,
                leeway=self._spec.leeway,
                options={"require": self._require, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.", challenge=_invalid("token expired")) from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"The token is not valid: {exc}.", challenge=_invalid("invalid token")) from None
        if self._scopes:
            granted = _scopes(claims)
            missing = self._scopes - granted
            if missing:
                needed = " ".join(sorted(self._scopes))
                raise Forbidden(
                    f"The token lacks the scope(s) {' '.join(sorted(missing))}.",
                    headers=[
                        (
                            b"www-authenticate",
                            f'Bearer realm="gatehouse", error="insufficient_scope", scope="{needed}"'.encode(),
                        )
                    ],
                )
        identity = claims.get(self._spec.identity_claim)
        if not isinstance(identity, str | int) or identity == "":
            raise Unauthorized(
                f"The token has no {self._spec.identity_claim!r} claim.", challenge=_invalid("no subject")
            )
        return str(identity)


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    scope = claims.get("scope", claims.get("scp"))
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list):
        return frozenset(s for s in scope if isinstance(s, str))
    return frozenset()
