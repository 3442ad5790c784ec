"""Settings: one ``Settings`` object, built once from a file and the environment.

Precedence, highest first: keyword arguments, ``GATEHOUSE_*`` environment
variables, a ``.env`` file, the YAML/JSON file named by ``GATEHOUSE_CONFIG``,
then the defaults below. Nested values use ``__`` (``GATEHOUSE_TIMEOUT__READ=10``).

Anything invalid fails at start-up with a ``ConfigError`` naming the route and
field, e.g. ``routes[1] 'users' -> upstream: ...``.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.edge.models import Cors, InboundAuth, RateLimit, UpstreamAuth
from app.names import TOKEN, HeaderValues, Name, header_name
from app.webhooks.config import DEFAULT_WEBHOOK_STORE, WebhookEndpoints, WebhookStoreUrl

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """The configuration is invalid; the message lists every bad field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Model):
    """Seconds; ``connect`` to open a connection, ``pool`` to wait for a free one."""

    connect: float = Field(5.0, gt=0)
    read: float = Field(30.0, gt=0)
    write: float = Field(30.0, gt=0)
    pool: float = Field(5.0, gt=0)


class TimeoutOverride(_Model):
    connect: float | None = Field(None, gt=0)
    read: float | None = Field(None, gt=0)
    write: float | None = Field(None, gt=0)
    pool: float | None = Field(None, gt=0)

    def over(self, base: Timeouts) -> Timeouts:
        return base.model_copy(update=self.model_dump(exclude_none=True))


class Limits(_Model):
    """Connection pool size, per upstream origin."""

    max_connections: int = Field(100, ge=1)
    max_keepalive_connections: int = Field(20, ge=0)
    keepalive_expiry: float = Field(5.0, ge=0)


class Target(_Model):
    """One upstream instance behind a route; ``weight`` is its share of requests."""

    url: str
    weight: int = Field(1, ge=1, le=1000)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        return _checked_upstream(value)


Balancing = Literal["round_robin", "least_connections"]


class PassiveHealth(_Model):
    """Eject a target that fails ``max_failures`` times within ``window`` seconds.

    The first ejection lasts ``ejection`` seconds, each repeat twice as long, up
    to ``max_ejection``. ``max_failures: 0`` turns ejection off.
    """

    max_failures: int = Field(5, ge=0)
    window: float = Field(10.0, gt=0)
    ejection: float = Field(30.0, gt=0)
    max_ejection: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> PassiveHealth:
        if self.max_ejection < self.ejection:
            raise ValueError("max_ejection must be at least ejection")
        return self


class HealthCheck(_Model):
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


class Backoff(_Model):
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(cap, base * 2**n))."""

    base: float = Field(0.025, gt=0)
    cap: float = Field(0.25, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.cap < self.base:
            raise ValueError("cap must be at least base")
        return self


class Retries(_Model):
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


class CircuitBreaker(_Model):
    """Per target: open after ``failure_threshold`` consecutive failures, for ``reset_timeout`` s."""

    failure_threshold: int = Field(5, ge=1)
    reset_timeout: float = Field(10.0, gt=0)
    half_open_requests: int = Field(1, ge=1)


class HeaderRules(_Model):
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
    from app.proxy.urls import parse_upstream  # local: urls is pure and imports nothing back

    parse_upstream(value)  # raises ValueError with the reason
    return value.rstrip("/") if value.count("/") > 2 else value


# Tagged unions keep error messages to the form that was written (tags are left out of them).
_UNION_TAGS = frozenset({"url-form", "list-form", "settings-form", "off-form"})
UpstreamSetting = Annotated[
    Annotated[str, Tag("url-form")] | Annotated[list[Target], Tag("list-form")],
    Discriminator(lambda value: "list-form" if isinstance(value, list) else "url-form"),
]


def _off(value: Any) -> str:
    return "off-form" if value is None or value is False else "settings-form"


_Off = Annotated[Literal[False] | None, Tag("off-form")]
HealthCheckOrOff = Annotated[Annotated[HealthCheck, Tag("settings-form")] | _Off, Discriminator(_off)]
RetriesOrOff = Annotated[Annotated[Retries, Tag("settings-form")] | _Off, Discriminator(_off)]
CircuitBreakerOrOff = Annotated[Annotated[CircuitBreaker, Tag("settings-form")] | _Off, Discriminator(_off)]


class Route(_Model):
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
    # Resilience: None takes the top-level default; False turns a default off for this route.
    balancing: Balancing | None = None
    passive_health: PassiveHealth | None = None
    health_check: HealthCheckOrOff = None
    retries: RetriesOrOff = None
    circuit_breaker: CircuitBreakerOrOff = None
    max_concurrent: int | None = Field(None, ge=1)
    # Edge settings; a route that leaves one out inherits the top-level value (``false``: none).
    auth: InboundAuth | None = None
    upstream_auth: UpstreamAuth | None = None
    cors: Cors | None = None
    rate_limit: RateLimit | None = None

    @field_validator("prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        if value != "/" and value.endswith("/"):
            raise ValueError("must not end with '/' (prefixes match whole segments)")
        if "//" in value or "?" in value or "#" in value or "%" in value:
            raise ValueError("must be a plain path: no '//', '?', '#' or percent-escapes")
        if any(segment in (".", "..") for segment in value.split("/")):
            raise ValueError("must not contain '.' or '..' segments")
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
    def _valid_upstream(cls, value: str | list[Target]) -> str | list[Target]:
        if isinstance(value, str):
            return _checked_upstream(value)
        from app.proxy.urls import parse_upstream

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
    def target_list(self) -> list[Target]:
        """The targets, whichever way ``upstream`` was written."""
        if isinstance(self.upstream, str):
            return [Target(url=self.upstream)]
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


class Resilience(_Model):
    """A route's resilience settings after top-level defaults are applied."""

    balancing: Balancing = "round_robin"
    passive_health: PassiveHealth = Field(default_factory=PassiveHealth)
    health_check: HealthCheck | None = None
    retries: Retries | None = None
    circuit_breaker: CircuitBreaker | None = None
    max_concurrent: int | None = None


LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads the YAML or JSON file named by ``config`` (``GATEHOUSE_CONFIG``)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ is overridden; pydantic-settings requires the method

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"config: cannot read {str(self.path)!r}: {exc.strerror}") from exc
        try:
            if self.path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                data = yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"config: {str(self.path)!r} is not valid YAML/JSON: {exc}") from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"config: {str(self.path)!r} must hold a mapping at the top level")
        return data


class _KnownFieldsOnly(PydanticBaseSettingsSource):
    """A ``.env`` is shared with other tools (docker compose reads it too):
    keys that are not Gatehouse settings are ignored there, as in the real
    environment, instead of failing start-up. Typos in the config file still fail."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ is overridden; pydantic-settings requires the method

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        return {key: value for key, value in self.inner().items() if key in fields}


class Settings(BaseSettings):
    """Everything Gatehouse reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        frozen=True,
    )

    config: Path | None = None
    routes: list[Route] = Field(default_factory=list)
    timeout: Timeouts = Field(default_factory=Timeouts)
    limits: Limits = Field(default_factory=Limits)
    trusted_proxies: list[IPNetwork] = Field(default_factory=list)
    ops_prefix: str = "/_gatehouse"
    log_level: LogLevel = "info"
    # Resilience defaults for every route (a route's own value wins).
    balancing: Balancing = "round_robin"
    passive_health: PassiveHealth = Field(default_factory=PassiveHealth)
    health_check: HealthCheck | None = None
    retries: Retries | None = None
    circuit_breaker: CircuitBreaker | None = None
    max_concurrent: int | None = Field(None, ge=1)
    shutdown_grace: float = Field(30.0, ge=0)
    # Defaults for routes that do not set their own.
    auth: InboundAuth | None = None
    cors: Cors | None = None
    rate_limit: RateLimit | None = None
    # Rate-limit storage: in memory (per process) unless redis_url is set.
    redis_url: SecretStr | None = None
    redis_timeout: float = Field(0.5, gt=0)  # seconds per Redis operation before fail_open applies
    storage_error_log_interval: float = Field(60.0, gt=0)  # log an unreachable storage at most this often
    # Hardening.
    max_header_count: int = Field(100, ge=1)
    max_header_bytes: int = Field(16384, ge=256)  # names + values, all fields together
    redact_query_params: list[str] = Field(default_factory=lambda: ["token", "access_token", "api_key", "key"])
    # What carries HTTP/1.1 under the httpx clients; HTTP/2 routes always use httpcore.
    upstream_transport: Literal["aiohttp", "httpcore"] = "aiohttp"
    # Bearer token for the admin ops API (webhook replay, config reload); unset disables it.
    admin_token: SecretStr | None = Field(None, min_length=16)
    # Observability: one access-log line per request to stdout; spans when the OpenTelemetry SDK is installed.
    access_log: Literal["json", "text", "off"] = "json"
    tracing: Literal["none", "otlp", "console"] = "none"
    # Webhooks: verified intake, a durable outbox, background delivery (see app/webhooks).
    webhooks: WebhookEndpoints = Field(default_factory=list)
    webhook_store: WebhookStoreUrl = DEFAULT_WEBHOOK_STORE
    retention_days: float = Field(7.0, gt=0)  # delivered events are pruned this long after delivery
    webhook_dispatch_interval: float = Field(1.0, gt=0)  # seconds between polls for due deliveries
    webhook_dispatch_batch: int = Field(50, ge=1, le=1000)  # deliveries claimed per poll
    webhook_dispatch_concurrency: int = Field(20, ge=1, le=1000)  # attempts in flight per process
    webhook_lease_seconds: float = Field(60.0, gt=0)  # a crashed holder's deliveries are retried after this
    webhook_prune_interval: float = Field(3600.0, gt=0)  # seconds between retention prunes

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path: Any = None
        for source in (init_settings, env_settings, dotenv_settings):
            path = source().get("config") or path
            if path:
                break
        file_source = _ConfigFileSource(settings_cls, Path(path) if path else None)
        dotenv = _KnownFieldsOnly(settings_cls, dotenv_settings)
        return init_settings, env_settings, dotenv, file_source, file_secret_settings

    def resilience_for(self, route: Route) -> Resilience:
        """``route``'s own resilience settings, falling back to the top-level defaults."""

        def pick(own: Any, default: Any) -> Any:
            if own is False:
                return None
            return default if own is None else own

        return Resilience(
            balancing=route.balancing or self.balancing,
            passive_health=route.passive_health or self.passive_health,
            health_check=pick(route.health_check, self.health_check),
            retries=pick(route.retries, self.retries),
            circuit_breaker=pick(route.circuit_breaker, self.circuit_breaker),
            max_concurrent=route.max_concurrent or self.max_concurrent,
        )

    @model_validator(mode="before")
    @classmethod
    def _inherit_edge_defaults(cls, data: Any) -> Any:
        # Top-level auth / cors / rate_limit apply to routes that leave them out;
        # ``false`` (here or on a route) means none.
        if not isinstance(data, dict):
            return data
        data = {k: (None if k in _EDGE_DEFAULTS and v is False else v) for k, v in data.items()}
        routes = data.get("routes")
        if not isinstance(routes, list):
            return data
        merged = []
        for route in routes:
            if isinstance(route, Route):
                route = route.model_dump(exclude_unset=True)
            if isinstance(route, dict):
                route = {k: (None if k in _EDGE_DEFAULTS and v is False else v) for k, v in route.items()}
                for key in _EDGE_DEFAULTS:
                    if key not in route and data.get(key) is not None:
                        route[key] = data[key]
            merged.append(route)
        data["routes"] = merged
        return data

    @field_validator("redis_url")
    @classmethod
    def _valid_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    @field_validator("ops_prefix")
    @classmethod
    def _valid_ops_prefix(cls, value: str) -> str:
        if not value.startswith("/") or value == "/" or value.endswith("/") or "//" in value:
            raise ValueError("must look like '/_gatehouse': a leading '/', no trailing '/'")
        return value

    @field_validator("access_log", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare ``off`` as false

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="wrap")
    @classmethod
    def _name_route_errors(cls, data: Any, handler: Any) -> Settings:
        try:
            settings: Settings = handler(data)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, data)) from None
        return settings

    @model_validator(mode="after")
    def _unique_routes(self) -> Settings:
        problems: list[str] = []
        seen_names: dict[str, int] = {}
        seen_prefixes: dict[str, int] = {}
        for index, route in enumerate(self.routes):
            label = f"routes[{index}] {route.name!r}"
            if route.name in seen_names:
                problems.append(f"{label} -> name: duplicate of routes[{seen_names[route.name]}]")
            seen_names.setdefault(route.name, index)
            if route.prefix in seen_prefixes:
                problems.append(
                    f"{label} -> prefix: {route.prefix!r} is already used by routes[{seen_prefixes[route.prefix]}]"
                )
            seen_prefixes.setdefault(route.prefix, index)
            ops = self.ops_prefix
            if route.prefix == ops or route.prefix.startswith(ops + "/"):
                problems.append(f"{label} -> prefix: {route.prefix!r} is inside ops_prefix {ops!r}")
            problems.extend(f"{label} -> rate_limit.key: {p}" for p in _rate_limit_key_problems(route))
        for index, endpoint in enumerate(self.webhooks):
            label = f"webhooks[{index}] {endpoint.name!r} -> path"
            ops = self.ops_prefix
            if endpoint.path == ops or endpoint.path.startswith(ops + "/"):
                problems.append(f"{label}: {endpoint.path!r} is inside ops_prefix {ops!r}")
            for route in self.routes:
                if route.prefix == "/" or endpoint.path == route.prefix or endpoint.path.startswith(route.prefix + "/"):
                    problems.append(
                        f"{label}: {endpoint.path!r} is inside route {route.name!r} (prefix {route.prefix!r})"
                    )
            timeouts = [t.timeout for t in endpoint.deliver_to if t.timeout >= self.webhook_lease_seconds]
            if timeouts:
                problems.append(
                    f"webhooks[{index}] {endpoint.name!r} -> deliver_to: a timeout of {max(timeouts)}s is not below "
                    f"webhook_lease_seconds ({self.webhook_lease_seconds}s); the lease would expire mid-attempt"
                )
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        return self


_EDGE_DEFAULTS = ("auth", "cors", "rate_limit")


def _rate_limit_key_problems(route: Route) -> list[str]:
    if route.rate_limit is None:
        return []
    key = route.rate_limit.key
    auth_type = route.auth.type if route.auth is not None else None
    if key == "api_key" and auth_type != "api_key":
        return ["'api_key' needs auth of type api_key on this route"]
    if key == "subject" and auth_type not in ("jwt", "basic"):
        return ["'subject' needs auth of type jwt or basic on this route"]
    return []


def format_errors(exc: ValidationError, data: Any) -> str:
    """Turn pydantic's errors into lines that name the route and the field."""
    raw_routes = data.get("routes") if isinstance(data, dict) else None
    lines = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        where = ".".join(str(part) for part in loc) or "settings"
        if len(loc) >= 2 and loc[0] == "webhooks" and isinstance(loc[1], int):
            raw_hooks = data.get("webhooks") if isinstance(data, dict) else None
            index = loc[1]
            name = None
            if isinstance(raw_hooks, list) and index < len(raw_hooks) and isinstance(raw_hooks[index], dict):
                name = raw_hooks[index].get("name")
            parts = [part for part in loc[2:] if part not in _UNION_TAGS]
            field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)
            where = (
                f"webhooks[{index}]" + (f" {name!r}" if name else "") + f" -> {field.removeprefix('.') or '(webhook)'}"
            )
        if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
            index = loc[1]
            name = None
            if isinstance(raw_routes, list) and index < len(raw_routes) and isinstance(raw_routes[index], dict):
                name = raw_routes[index].get("name")
            parts = [part for part in loc[2:] if part not in _UNION_TAGS]
            field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)
            field = field.removeprefix(".") or "(route)"
            where = f"routes[{index}]" + (f" {name!r}" if name else "") + f" -> {field}"
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        lines.append(f"{where}: {message}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``config`` (or ``GATEHOUSE_CONFIG``) and the environment."""
    if config is not None:
        overrides["config"] = Path(config)
    return Settings(**overrides)
