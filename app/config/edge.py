"""Settings models for the edge: inbound ``auth``, ``upstream_auth``, ``cors``, ``rate_limit``.

Each is set per route, or once at the top level as the default for every route
that does not name it (``auth: false`` on a route turns an inherited default
off). Secrets are ``SecretStr`` so they never print; keys and passwords are
given hashed (see ``app.config.hashing``).
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from app.config.base import ConfigModel
from app.config.hashing import parse_key_hash, parse_password_hash
from app.config.names import TOKEN, header_name


def _from_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"environment variable {name} is not set")
    return value


class _InboundAuth(ConfigModel):
    forward_credentials: bool = False
    identity_header: str | None = None  # e.g. X-Gatehouse-Identity: the subject or key name

    @field_validator("identity_header")
    @classmethod
    def _valid_identity_header(cls, value: str | None) -> str | None:
        return None if value is None else header_name(value)


class ApiKeyAuth(_InboundAuth):
    """``keys`` maps a key's name to its hash: ``sha256:<hex of sha256(key)>``."""

    type: Literal["api_key"]
    header: str | None = "X-API-Key"
    query_param: str | None = None
    keys: dict[str, SecretStr]

    @field_validator("header")
    @classmethod
    def _valid_header(cls, value: str | None) -> str | None:
        return None if value is None else header_name(value)

    @field_validator("keys")
    @classmethod
    def _hashed_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if not value:
            raise ValueError("must list at least one key")
        for name, hashed in value.items():
            try:
                parse_key_hash(hashed.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"key {name!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _somewhere_to_look(self) -> ApiKeyAuth:
        if self.header is None and self.query_param is None:
            raise ValueError("set header or query_param (where the key is looked up)")
        return self


JwtAlgorithm = Literal["HS256", "RS256", "ES256"]


def _rs256() -> list[JwtAlgorithm]:
    return ["RS256"]


class JwtAuth(_InboundAuth):
    """Bearer JWTs, verified with a shared ``secret`` (HS256), a PEM ``public_key``, or a ``jwks_url``."""

    type: Literal["jwt"]
    algorithms: list[JwtAlgorithm] = Field(default_factory=_rs256)
    secret: SecretStr | None = None
    public_key: str | None = None
    jwks_url: str | None = None
    jwks_cache_seconds: float = Field(300.0, gt=0)
    jwks_min_refresh_seconds: float = Field(10.0, ge=0)  # unknown-kid refetches are at most this often
    issuer: str | None = None
    audience: list[str] | None = None
    leeway: float = Field(30.0, ge=0)
    required_claims: list[str] = Field(default_factory=list)
    required_scopes: list[str] = Field(default_factory=list)
    identity_claim: str = "sub"

    @field_validator("audience", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("jwks_url")
    @classmethod
    def _valid_jwks_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtAuth:
        sources = [s for s in (self.secret, self.public_key, self.jwks_url) if s is not None]
        if len(sources) != 1:
            raise ValueError("set exactly one of secret, public_key, jwks_url")
        hmac_algs = {a for a in self.algorithms if a.startswith("HS")}
        if self.secret is not None and hmac_algs != set(self.algorithms):
            raise ValueError("secret works with HS256 only (an HMAC key must not verify RS/ES tokens)")
        if self.secret is None and hmac_algs:
            raise ValueError("HS256 needs secret (a public key must never be used as an HMAC secret)")
        if not self.algorithms:
            raise ValueError("algorithms: list at least one")
        return self


class BasicAuth(_InboundAuth):
    """``users`` maps a user name to ``pbkdf2_sha256$<iterations>$<salt>$<hash>``."""

    type: Literal["basic"]
    realm: str = "gatehouse"
    users: dict[str, SecretStr]

    @field_validator("users")
    @classmethod
    def _hashed_passwords(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if not value:
            raise ValueError("must list at least one user")
        for name, hashed in value.items():
            if ":" in name:
                raise ValueError(f"user {name!r}: a user name must not contain ':'")
            try:
                parse_password_hash(hashed.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"user {name!r}: {exc}") from None
        return value

    @field_validator("realm")
    @classmethod
    def _plain_realm(cls, value: str) -> str:
        if '"' in value or "\\" in value or any(ord(c) < 32 for c in value):
            raise ValueError("must not contain quotes, backslashes or control characters")
        return value


class MtlsAuth(_InboundAuth):
    """The TLS client certificate is the credential (``tls.client_ca_file`` verified it in the handshake).

    The identity is the certificate's subject as an RFC 4514 string
    (``CN=billing,O=Example``); ``subjects``, when given, lists the only ones let in.
    """

    type: Literal["mtls"]
    subjects: list[str] | None = None


InboundAuth = Annotated[ApiKeyAuth | JwtAuth | BasicAuth | MtlsAuth, Field(discriminator="type")]


class _Secret(ConfigModel):
    """A secret given inline (``SecretStr``) or by the name of an environment variable."""

    @staticmethod
    def _pick(inline: SecretStr | None, env: str | None, what: str) -> SecretStr:
        if (inline is None) == (env is None):
            raise ValueError(f"set exactly one of {what} or {what}_env")
        return inline if inline is not None else SecretStr(_from_env(env or ""))


class BearerUpstreamAuth(ConfigModel):
    type: Literal["bearer"]
    token_env: str

    @field_validator("token_env")
    @classmethod
    def _env_is_set(cls, value: str) -> str:
        _from_env(value)
        return value

    def token(self) -> SecretStr:
        return SecretStr(_from_env(self.token_env))


class BasicUpstreamAuth(_Secret):
    type: Literal["basic"]
    username: str
    password: SecretStr | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _one_password(self) -> BasicUpstreamAuth:
        self._pick(self.password, self.password_env, "password")
        return self

    def secret(self) -> SecretStr:
        return self._pick(self.password, self.password_env, "password")


class OAuth2ClientCredentials(_Secret):
    type: Literal["oauth2_client_credentials"]
    token_url: str
    client_id: str
    client_secret: SecretStr | None = None
    client_secret_env: str | None = None
    scope: str | None = None
    audience: str | None = None
    refresh_before_seconds: float = Field(30.0, ge=0)  # renew this long before the token expires

    @field_validator("token_url")
    @classmethod
    def _valid_token_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> OAuth2ClientCredentials:
        self._pick(self.client_secret, self.client_secret_env, "client_secret")
        return self

    def secret(self) -> SecretStr:
        return self._pick(self.client_secret, self.client_secret_env, "client_secret")


class HmacUpstreamAuth(_Secret):
    """Signs ``METHOD\\nPATH?QUERY\\nTIMESTAMP\\nSHA256(BODY)`` with HMAC-SHA256."""

    type: Literal["hmac"]
    secret: SecretStr | None = None
    secret_env: str | None = None
    key_id: str | None = None
    signature_header: str = "X-Signature"
    timestamp_header: str = "X-Signature-Timestamp"
    key_id_header: str = "X-Signature-Key-Id"

    @field_validator("signature_header", "timestamp_header", "key_id_header")
    @classmethod
    def _valid_headers(cls, value: str) -> str:
        return header_name(value)

    @model_validator(mode="after")
    def _one_secret(self) -> HmacUpstreamAuth:
        self._pick(self.secret, self.secret_env, "secret")
        return self

    def key(self) -> SecretStr:
        return self._pick(self.secret, self.secret_env, "secret")


UpstreamAuth = Annotated[
    BearerUpstreamAuth | BasicUpstreamAuth | OAuth2ClientCredentials | HmacUpstreamAuth,
    Field(discriminator="type"),
]


class Cors(ConfigModel):
    allow_origins: list[str] = Field(default_factory=list)  # exact origins, or ["*"]
    allow_origin_regex: str | None = None  # full match, e.g. https://.*\.example\.com
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "HEAD", "POST"])
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    allow_credentials: bool = False
    max_age: int = Field(600, ge=0)

    @field_validator("allow_origins")
    @classmethod
    def _valid_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.count("/") != 2):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path) or '*'")
        return value

    @field_validator("allow_origin_regex")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("allow_methods")
    @classmethod
    def _valid_methods(cls, value: list[str]) -> list[str]:
        upper = [m.upper() for m in value]
        for method in upper:
            if method != "*" and not TOKEN.match(method):
                raise ValueError(f"{method!r} is not a valid method")
        return upper

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _valid_header_names(cls, value: list[str]) -> list[str]:
        return [name if name == "*" else header_name(name) for name in value]

    @model_validator(mode="after")
    def _credentials_need_explicit_origins(self) -> Cors:
        if not self.allow_origins and self.allow_origin_regex is None:
            raise ValueError("set allow_origins or allow_origin_regex")
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_credentials cannot be used with allow_origins ['*'] (browsers refuse it)")
        return self


_KEY = re.compile(r"^(ip|api_key|subject|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)\Z")


class RateLimit(ConfigModel):
    """``limit`` in the ``limits`` notation: ``100/minute``, ``10/second;1000/hour``."""

    limit: str
    key: str = "ip"  # ip | api_key | subject | header:<Name>
    strategy: Literal["fixed-window", "moving-window"] = "moving-window"
    fail_open: bool = True  # when the storage (Redis) is unreachable: let requests through

    @field_validator("limit")
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        from limits import parse_many  # local: keeps settings import cheap

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '100/minute': {exc}") from None
        return value

    @field_validator("key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        if not _KEY.match(value):
            raise ValueError("must be ip, api_key, subject or header:<Name>")
        return value
