"""Settings models for one route: its upstream, timeouts, pool limits, headers and policies.

Names end in ``Settings`` where a runtime object of the same concept exists
(``CircuitBreakerSettings`` configures ``resilience.breaker.CircuitBreaker``).
``Resilience`` and ``EdgePolicy`` are a route's policies once the top-level
defaults are applied; ``Settings.policies_for`` is the one place that happens.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from app.config.base import ConfigModel, Off, OffForm, SettingsForm, off_or_settings
from app.config.edge import Cors, InboundAuth, RateLimit, UpstreamAuth
from app.config.names import TOKEN, HeaderValues, Name, header_name, plain_path
from app.config.tls import certificate_file, check_key_pair, key_file
from app.config.upstream import parse_upstream
from app.config.websocket import WebSocketSettings


class Timeouts(ConfigModel):
    """Seconds; ``connect`` to open a connection, ``pool`` to wait for a free one."""

    connect: float = Field(5.0, gt=0)
    read: float = Field(30.0, gt=0)
    write: float = Field(30.0, gt=0)
    pool: float = Field(5.0, gt=0)


class TimeoutOverride(ConfigModel):
    connect: float | None = Field(None, gt=0)
    read: float | None = Field(None, gt=0)
    write: float | None = Field(None, gt=0)
    pool: float | None = Field(None, gt=0)

    def over(self, base: Timeouts) -> Timeouts:
        return base.model_copy(update=self.model_dump(exclude_none=True))


class PoolLimits(ConfigModel):
    """Connection pool size, per upstream origin."""

    max_connections: int = Field(100, ge=1)
    # As many as the pool holds: a gateway under steady load reuses its upstream connections rather
    # than closing the ones over a smaller cap and reconnecting (httpx's client default is 20);
    # keepalive_expiry still closes the idle ones.
    max_keepalive_connections: int = Field(100, ge=0)
    keepalive_expiry: float = Field(5.0, ge=0)


class TargetSettings(ConfigModel):
    """One upstream instance behind a route; ``weight`` is its share of requests."""

    url: str
    weight: int = Field(1, ge=1, le=1000)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        return _checked_upstream(value)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Balancing = Literal["round_robin", "least_connections"]
# What a route does with %2F and %5C in a path (see app.proxy.ambiguity), and the ways an
# upstream may read a path that Gatehouse checks; a route may ignore those its upstream never makes.
EncodedSlashes = Literal["reject", "decode", "keep"]
Reading = Literal["unicode", "backslash", "semicolon", "trailing", "case"]


class PassiveHealthSettings(ConfigModel):
    """Eject a target that fails ``max_failures`` times within ``window`` seconds.

    The first ejection lasts ``ejection`` seconds, each repeat twice as long, up
    to ``max_ejection``. ``max_failures: 0`` turns ejection off.
    """

    max_failures: int = Field(5, ge=0)
    window: float = Field(10.0, gt=0)
    ejection: float = Field(30.0, gt=0)
    max_ejection: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> PassiveHealthSettings:
        if self.max_ejection < self.ejection:
            raise ValueError("max_ejection must be at least ejection")
        return self


class HealthCheck(ConfigModel):
    """Active health checks: ``GET path`` on every target each ``interval`` seconds."""

    path: str = "/healthz"
    interval: float = Field(10.0, gt=0)
    timeout: float = Field(2.0, gt=0)
    healthy_threshold: int = Field(2, ge=1)
    unhealthy_threshold: int = Field(3, ge=1)

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in " \r\n\x00#"):
            raise ValueError("must be a path starting with '/' (a query string is allowed)")
        return value


class Backoff(ConfigModel):
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(cap, base * 2**n))."""

    base: float = Field(0.025, gt=0)
    cap: float = Field(0.25, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.cap < self.base:
            raise ValueError("cap must be at least base")
        return self


class Retries(ConfigModel):
    """Safe retries: idempotent methods (or an Idempotency-Key), replayable bodies only."""

    attempts: int = Field(3, ge=1, le=10)
    on: list[int] = Field(default_factory=lambda: [502, 503, 504])
    backoff: Backoff = Field(default_factory=Backoff)
    budget: float = Field(0.2, ge=0, le=1)
    min_per_second: float = Field(3.0, ge=0)
    max_body_bytes: int = Field(64 * 1024, ge=0)
    max_retry_after: float = Field(2.0, ge=0)

    @field_validator("on")
    @classmethod
    def _server_errors_only(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 500 <= status <= 599:
                raise ValueError(f"{status} is not a 5xx status (a 4xx is the client's to fix, never retried)")
        return sorted(set(value))


class CircuitBreakerSettings(ConfigModel):
    """Per target: open after ``failure_threshold`` consecutive failures, for ``reset_timeout`` s."""

    failure_threshold: int = Field(5, ge=1)
    reset_timeout: float = Field(10.0, gt=0)
    half_open_requests: int = Field(1, ge=1)


class HeaderRules(ConfigModel):
    """Headers to set (replacing any the message had) and to remove."""

    set: HeaderValues = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

    @field_validator("remove")
    @classmethod
    def _valid_remove(cls, value: list[str]) -> list[str]:
        for name in value:
            header_name(name)
        return value


def _checked_upstream(value: str) -> str:
    parse_upstream(value)  # raises ValueError with the reason
    return value.rstrip("/") if value.count("/") > 2 else value


UpstreamSetting = Annotated[
    Annotated[str, Tag("url-form")] | Annotated[list[TargetSettings], Tag("list-form")],
    Discriminator(lambda value: "list-form" if isinstance(value, list) else "url-form"),
]


_Off = Annotated[Off, OffForm]
HealthCheckOrOff = Annotated[Annotated[HealthCheck, SettingsForm] | _Off, Discriminator(off_or_settings)]
RetriesOrOff = Annotated[Annotated[Retries, SettingsForm] | _Off, Discriminator(off_or_settings)]
CircuitBreakerOrOff = Annotated[Annotated[CircuitBreakerSettings, SettingsForm] | _Off, Discriminator(off_or_settings)]
InboundAuthOrOff = Annotated[Annotated[InboundAuth, SettingsForm] | _Off, Discriminator(off_or_settings)]
CorsOrOff = Annotated[Annotated[Cors, SettingsForm] | _Off, Discriminator(off_or_settings)]
RateLimitOrOff = Annotated[Annotated[RateLimit, SettingsForm] | _Off, Discriminator(off_or_settings)]
WebSocketOrOff = Annotated[Annotated[WebSocketSettings, SettingsForm] | _Off, Discriminator(off_or_settings)]


class Route(ConfigModel):
    """One upstream behind one path prefix."""

    name: Name
    prefix: str
    upstream: UpstreamSetting
    strip_prefix: bool = True
    methods: list[str] | None = None
    timeout: TimeoutOverride = Field(default_factory=TimeoutOverride)
    preserve_host: bool = False
    http2: bool = False
    request_headers: HeaderRules = Field(default_factory=HeaderRules)
    response_headers: HeaderRules = Field(default_factory=HeaderRules)
    max_body_bytes: int | None = Field(None, ge=0)
    verify: bool | Path = True
    encoded_slashes: EncodedSlashes = "reject"
    allow_method_override: bool = False  # pass X-HTTP-Method-Override and kin to the upstream
    # Allow-lists and deny-lists of client addresses (after trusted_proxies); others get 403.
    allow_ips: list[IPNetwork] | None = None
    deny_ips: list[IPNetwork] = Field(default_factory=list)
    ignore_path_readings: list[Reading] = Field(default_factory=list)
    # A client certificate for upstreams that require mutual TLS (both or neither; https upstreams only).
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    # Resilience: None takes the top-level default; False turns a default off for this route.
    balancing: Balancing | None = None
    passive_health: PassiveHealthSettings | None = None
    health_check: HealthCheckOrOff = None
    retries: RetriesOrOff = None
    circuit_breaker: CircuitBreakerOrOff = None
    max_concurrent: int | None = Field(None, ge=1)
    # WebSocket handshakes are proxied wherever GET is allowed; ``false`` refuses them on this route.
    websocket: WebSocketOrOff = None
    # Edge settings; a route that leaves one out inherits the top-level value (``false``: none).
    auth: InboundAuthOrOff = None
    upstream_auth: UpstreamAuth | None = None
    cors: CorsOrOff = None
    rate_limit: RateLimitOrOff = None

    @field_validator("prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        plain_path(value)
        if value != "/" and value.endswith("/"):
            raise ValueError("must not end with '/' (prefixes match whole segments)")
        return value

    @field_validator("upstream", mode="before")
    @classmethod
    def _targets_from_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("must list at least one target")
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("upstream")
    @classmethod
    def _valid_upstream(cls, value: str | list[TargetSettings]) -> str | list[TargetSettings]:
        if isinstance(value, str):
            return _checked_upstream(value)
        first = parse_upstream(value[0].url)
        seen: set[str] = set()
        for index, target in enumerate(value):
            parsed = parse_upstream(target.url)
            # One header plan and one target path serve every target of the route.
            if parsed.base_path != first.base_path:
                raise ValueError(f"[{index}].url: every target must have the same base path as [0]")
            if parsed.origin in seen:
                raise ValueError(f"[{index}].url: {parsed.origin} is listed twice")
            seen.add(parsed.origin)
        return value

    @property
    def target_list(self) -> list[TargetSettings]:
        """The targets, whichever way ``upstream`` was written."""
        if isinstance(self.upstream, str):
            return [TargetSettings(url=self.upstream)]
        return list(self.upstream)

    @field_validator("methods")
    @classmethod
    def _valid_methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one method (omit it to allow all)")
        upper = [m.upper() for m in value]
        for method in upper:
            if not TOKEN.match(method):
                raise ValueError(f"{method!r} is not a valid method")
        return upper

    @model_validator(mode="after")
    def _verify_bundle_exists(self) -> Route:
        if isinstance(self.verify, Path) and not self.verify.is_file():
            raise ValueError(f"verify: CA bundle {str(self.verify)!r} does not exist")
        return self

    @field_validator("client_cert_file")
    @classmethod
    def _client_cert(cls, value: Path | None) -> Path | None:
        return None if value is None else certificate_file(value)

    @field_validator("client_key_file")
    @classmethod
    def _client_key(cls, value: Path | None) -> Path | None:
        return None if value is None else key_file(value)

    @model_validator(mode="after")
    def _client_certificate(self) -> Route:
        cert, key = self.client_cert_file, self.client_key_file
        if cert is None and key is None:
            return self
        if cert is None or key is None:
            raise ValueError("client_cert_file and client_key_file go together: set both or neither")
        if any(not target.url.startswith("https://") for target in self.target_list):
            raise ValueError("client_cert_file: a client certificate needs an https:// upstream")
        check_key_pair(cert, key, cert_setting="client_cert_file", key_setting="client_key_file")
        return self


class Resilience(ConfigModel):
    """A route's resilience settings after the top-level defaults are applied (``Settings.policies_for``)."""

    balancing: Balancing = "round_robin"
    passive_health: PassiveHealthSettings = Field(default_factory=PassiveHealthSettings)
    health_check: HealthCheck | None = None
    retries: Retries | None = None
    circuit_breaker: CircuitBreakerSettings | None = None
    max_concurrent: int | None = None
    websocket: WebSocketSettings | None = None  # None: the route refuses WebSocket handshakes


class EdgePolicy(ConfigModel):
    """A route's edge settings after the top-level defaults are applied (``Settings.policies_for``)."""

    auth: InboundAuth | None = None
    upstream_auth: UpstreamAuth | None = None
    cors: Cors | None = None
    rate_limit: RateLimit | None = None

    def rate_limit_key_problems(self) -> list[str]:
        """Why the rate-limit key cannot work with this route's auth (empty: it can)."""
        if self.rate_limit is None:
            return []
        key = self.rate_limit.key
        auth_type = self.auth.type if self.auth is not None else None
        if key == "api_key" and auth_type != "api_key":
            return ["'api_key' needs auth of type api_key on this route"]
        if key == "subject" and auth_type not in ("jwt", "basic"):
            return ["'subject' needs auth of type jwt or basic on this route"]
        return []
