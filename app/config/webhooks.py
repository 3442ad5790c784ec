"""Settings models for webhook endpoints: ``webhooks: [...]`` and ``webhook_store``.

An endpoint names its verification scheme (a union discriminated on ``scheme``),
its delivery targets, its retry policy and its dedupe rule. Secrets are
``SecretStr``, so a dumped or printed configuration never shows them. Anything
inconsistent fails at start-up with the endpoint and field.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from app.config.base import ConfigModel
from app.config.edge import UpstreamAuth
from app.config.names import HeaderValues, Name, header_name, plain_path
from app.config.routes import CircuitBreakerOrOff, CircuitBreakerSettings

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DEFAULT_WEBHOOK_STORE = "sqlite+aiosqlite:///./gatehouse-webhooks.db"
DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
MIB = 1024 * 1024


def _lower_header_name(value: str) -> str:
    return header_name(value).lower()


def _nonempty_secrets(value: list[SecretStr]) -> list[SecretStr]:
    for index, secret in enumerate(value):
        if not secret.get_secret_value():
            raise ValueError(f"secrets[{index}] is empty")
    return value


HeaderName = Annotated[str, AfterValidator(_lower_header_name)]
Secrets = Annotated[list[SecretStr], Field(min_length=1), AfterValidator(_nonempty_secrets)]


def decode_standard_secret(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after an optional ``whsec_``."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("must be 'whsec_' followed by base64")
    return key


class StandardVerify(ConfigModel):
    """Standard Webhooks v1 (``webhook-*`` headers, or Svix's ``svix-*``)."""

    scheme: Literal["standard"]
    secrets: Secrets
    tolerance_seconds: int = Field(300, gt=0)
    has_default_event_id: ClassVar[bool] = True

    @field_validator("secrets")
    @classmethod
    def _base64_secrets(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, secret in enumerate(value):
            try:
                decode_standard_secret(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"secrets[{index}]: {exc}") from None
        return value


class GitHubVerify(ConfigModel):
    """GitHub: ``X-Hub-Signature-256: sha256=<hex>`` over the raw body."""

    scheme: Literal["github"]
    secrets: Secrets
    has_default_event_id: ClassVar[bool] = True


class StripeVerify(ConfigModel):
    """Stripe: ``Stripe-Signature: t=..,v1=..``; the whole ``whsec_...`` string is the key."""

    scheme: Literal["stripe"]
    secrets: Secrets
    tolerance_seconds: int = Field(300, gt=0)
    has_default_event_id: ClassVar[bool] = True


class SlackVerify(ConfigModel):
    """Slack: ``X-Slack-Signature: v0=<hex>`` over ``v0:{timestamp}:{body}``."""

    scheme: Literal["slack"]
    secrets: Secrets
    tolerance_seconds: int = Field(300, gt=0)
    has_default_event_id: ClassVar[bool] = True


class HmacVerify(ConfigModel):
    """Any provider that sends an HMAC of the raw body in one header."""

    scheme: Literal["hmac"]
    secrets: Secrets
    header: HeaderName
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    has_default_event_id: ClassVar[bool] = False


class NoVerify(ConfigModel):
    """No verification, chosen explicitly (an internal, already-trusted sender)."""

    scheme: Literal["none"]
    has_default_event_id: ClassVar[bool] = False


VerifyConfig = Annotated[
    StandardVerify | GitHubVerify | StripeVerify | SlackVerify | HmacVerify | NoVerify,
    Field(discriminator="scheme"),
]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str | SecretStr) else value


def _standard_secrets(value: list[SecretStr]) -> list[SecretStr]:
    for index, secret in enumerate(value):
        try:
            decode_standard_secret(secret.get_secret_value())
        except ValueError as exc:
            raise ValueError(f"[{index}]: {exc}") from None
    return value


StandardSecrets = Annotated[
    list[SecretStr], BeforeValidator(_one_or_many), Field(min_length=1), AfterValidator(_standard_secrets)
]
"""One ``whsec_...`` secret, or several while rotating (each signs; a receiver accepts any)."""


def rate_limit_per_second(value: str) -> tuple[int, float]:
    """``"50/second"`` -> ``(50, 1.0)``: the amount, and the period in seconds (the ``limits`` notation)."""
    from limits import parse  # local: keeps settings import cheap

    try:
        item = parse(value)
    except ValueError:
        raise ValueError("not a rate like '50/second' or '1000/minute'") from None
    if ";" in value or item.amount < 1:
        raise ValueError("one rate like '50/second' or '1000/minute'")
    return item.amount, float(item.get_expiry())


class DeliveryTarget(ConfigModel):
    """An internal URL each event of the endpoint is POSTed to."""

    name: Name
    url: str
    timeout: float = Field(10.0, gt=0)
    headers: HeaderValues = Field(default_factory=dict)
    upstream_auth: UpstreamAuth | None = None  # the same credentials a route can present
    # Standard Webhooks signature of each delivery (webhook-id/-timestamp/-signature headers).
    signing_secret: StandardSecrets | None = None
    # Pass the provider's own signature headers on (its timestamp goes stale on retries).
    forward_provider_signature: bool = False
    # Pacing: at most this many attempts at once (default: half the dispatcher's slots) and per period.
    max_in_flight: int | None = Field(None, ge=1, le=1000)
    rate_limit: str | None = None  # "50/second", "1000/minute"
    # Stop attempting a target whose attempts keep failing, then try one (on unless ``false``).
    circuit_breaker: CircuitBreakerOrOff = Field(default_factory=CircuitBreakerSettings)
    # Only events of these types (exact, or globs like "invoice.*"); unset: every event.
    event_types: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(None, min_length=1)

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str | None) -> str | None:
        if value is not None:
            rate_limit_per_second(value)
        return value

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        if parts.fragment:
            raise ValueError("must not have a fragment")
        return value

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [(name.lower().encode("latin-1"), v.encode("latin-1")) for name, v in self.headers.items()]


class RetryPolicy(ConfigModel):
    """Delays (seconds) before each retry; after the last one a delivery is dead."""

    schedule: list[Annotated[float, Field(ge=0)]] = Field(default_factory=lambda: list(DEFAULT_SCHEDULE))
    jitter: float = Field(0.2, ge=0, lt=1)
    retry_after_cap: float = Field(3600.0, gt=0)

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1


class Dedupe(ConfigModel):
    """Drop repeats of a provider event id; ``header`` overrides the scheme's id source."""

    enabled: bool = True
    header: HeaderName | None = None


class EventTypeSource(ConfigModel):
    """Where an event's type is read: a header, or a JSON pointer (RFC 6901) into the body."""

    header: HeaderName | None = None
    json_pointer: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> EventTypeSource:
        if (self.header is None) == (self.json_pointer is None):
            raise ValueError("set exactly one of header or json_pointer")
        if self.json_pointer is not None and not self.json_pointer.startswith("/"):
            raise ValueError("json_pointer must start with '/', e.g. /type or /event/type")
        return self


# Where each scheme's providers put the event type, unless an endpoint's ``event_type`` says otherwise.
DEFAULT_EVENT_TYPES: dict[str, EventTypeSource] = {
    "github": EventTypeSource(header="x-github-event"),
    "stripe": EventTypeSource(json_pointer="/type"),
    "standard": EventTypeSource(json_pointer="/type"),
    "slack": EventTypeSource(json_pointer="/event/type"),
}


def _dedupe_from_bool(value: Any) -> Any:
    return {"enabled": value} if isinstance(value, bool) else value


class WebhookEndpoint(ConfigModel):
    """One provider-facing path: verify, persist, then deliver to ``deliver_to``."""

    name: Name
    path: str
    verify: VerifyConfig
    deliver_to: list[DeliveryTarget] = Field(min_length=1)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    max_body_bytes: int = Field(MIB, gt=0)
    dedupe: Annotated[Dedupe, BeforeValidator(_dedupe_from_bool)] = Field(default_factory=Dedupe)
    event_type: EventTypeSource | None = None  # default: the scheme's (DEFAULT_EVENT_TYPES)

    @property
    def event_type_source(self) -> EventTypeSource | None:
        return self.event_type or DEFAULT_EVENT_TYPES.get(self.verify.scheme)

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        if value == "/":
            raise ValueError("must start with '/' and name a path")
        plain_path(value)
        if value.endswith("/"):
            raise ValueError("must not end with '/'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WebhookEndpoint:
        names = [target.name for target in self.deliver_to]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"deliver_to: target names must be unique, repeated: {', '.join(duplicates)}")
        if self.event_type_source is None and any(t.event_types for t in self.deliver_to):
            raise ValueError(
                f"deliver_to: event_types needs the event's type; scheme {self.verify.scheme!r} has none, "
                "set event_type"
            )
        if self.dedupe.enabled and self.dedupe.header is None and not self.verify.has_default_event_id:
            raise ValueError(
                f"dedupe: scheme {self.verify.scheme!r} has no event id; set dedupe.header or dedupe: false"
            )
        return self


def store_url(url: str) -> URL:
    """The async-driver URL for a ``webhook_store`` setting (``postgresql://``, ``sqlite:///``)."""
    # Imported here, not at the top: SQLAlchemy (~11 MiB) is loaded only when a store is used or configured.
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed.query):
            raise ValueError("webhook_store: SQLite needs a file path; an in-memory database is not durable")
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"webhook_store: unsupported backend {backend!r}; use sqlite:/// or postgresql://")


def _valid_store_url(value: str) -> str:
    if value == DEFAULT_WEBHOOK_STORE:
        # Known valid; checking it would import SQLAlchemy in every process, webhooks or not.
        return value
    from sqlalchemy.exc import ArgumentError

    try:
        store_url(value)
    except ArgumentError:
        raise ValueError("not a database URL; use sqlite:///path or postgresql://user@host/db") from None
    return value


WebhookStoreUrl = Annotated[str, AfterValidator(_valid_store_url)]
"""The ``webhook_store`` settings field, e.g. ``DEFAULT_WEBHOOK_STORE`` or ``postgresql://...``."""


def _unique_endpoints(value: list[WebhookEndpoint]) -> list[WebhookEndpoint]:
    for attribute in ("name", "path"):
        seen = [getattr(endpoint, attribute) for endpoint in value]
        repeated = sorted({item for item in seen if seen.count(item) > 1})
        if repeated:
            raise ValueError(f"webhook {attribute}s must be unique, repeated: {', '.join(repeated)}")
    return value


WebhookEndpoints = Annotated[list[WebhookEndpoint], AfterValidator(_unique_endpoints)]
"""The ``webhooks`` settings field: endpoints with unique names and paths."""
