"""Settings: one ``Settings`` object, built once from a file and the environment.

Precedence, highest first: keyword arguments, ``GATEHOUSE_*`` environment
variables, a ``.env`` file, the YAML/JSON file named by ``GATEHOUSE_CONFIG``,
then the defaults below. Nested values use ``__`` (``GATEHOUSE_TIMEOUT__READ=10``).

Anything invalid fails at start-up with a ``ConfigError`` naming the route and
field, e.g. ``routes[1] 'users' -> upstream: ...``.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from app.config.base import UNION_TAGS
from app.config.expansion import expand
from app.config.names import header_name, plain_path
from app.config.routes import (
    Balancing,
    CircuitBreakerSettings,
    CorsOrOff,
    EdgePolicy,
    HealthCheck,
    InboundAuthOrOff,
    IPNetwork,
    PassiveHealthSettings,
    PoolLimits,
    RateLimitOrOff,
    Resilience,
    Retries,
    Route,
    Timeouts,
)
from app.config.server import OpsListenSetting, ServerSettings
from app.config.tls import TlsSettings
from app.config.webhooks import DEFAULT_WEBHOOK_STORE, WebhookEndpoints, WebhookStoreUrl
from app.config.websocket import WebSocketSettings


class ConfigError(Exception):
    """The configuration is invalid; the message lists every bad field."""


LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Reads the YAML or JSON file named by ``config`` (``GATEHOUSE_CONFIG``)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ is overridden; pydantic-settings requires the method

    def __call__(self) -> dict[str, Any]:
        SUBSTITUTED.set(frozenset())
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
        expanded: dict[str, Any]
        expanded, expansion = expand(data, os.environ)
        SUBSTITUTED.set(frozenset(expansion.substituted))
        if expansion.problems:
            lines = [f"{_location(list(loc), expanded)}: {problem}" for loc, problem in expansion.problems]
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
        return expanded


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
    # A directory of files named like the variables (``gatehouse_admin_token``), as Docker and Kubernetes mount secrets.
    secrets_dir: Path | None = None
    routes: list[Route] = Field(default_factory=list)
    timeout: Timeouts = Field(default_factory=Timeouts)
    limits: PoolLimits = Field(default_factory=PoolLimits)
    trusted_proxies: list[IPNetwork] = Field(default_factory=list)
    ops_prefix: str = "/_gatehouse"
    log_level: LogLevel = "info"
    # The server ``gatehouse serve`` runs: uvicorn (HTTP/1.1) or hypercorn (HTTP/1.1 and HTTP/2, h2c and h2 over TLS).
    http_server: Literal["uvicorn", "hypercorn"] = "uvicorn"
    # HTTPS on the listening port (see ``app.config.tls``); unset: plain HTTP.
    tls: TlsSettings | None = None
    # Resilience defaults for every route (a route's own value wins).
    balancing: Balancing = "round_robin"
    passive_health: PassiveHealthSettings = Field(default_factory=PassiveHealthSettings)
    health_check: HealthCheck | None = None
    retries: Retries | None = None
    circuit_breaker: CircuitBreakerSettings | None = None
    max_concurrent: int | None = Field(None, ge=1)
    shutdown_grace: float = Field(30.0, ge=0)
    # Seconds between a shutdown signal and closing the listener: /readyz answers 503 while
    # requests are still served, so a load balancer or Kubernetes takes the endpoint out first.
    drain_delay: float = Field(0.0, ge=0, le=300)
    # WebSocket limits for routes that do not set their own (``routes[].websocket: false`` refuses them).
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)
    # Edge defaults for routes that do not set their own (``false`` here is the same as unset).
    auth: InboundAuthOrOff = None
    cors: CorsOrOff = None
    rate_limit: RateLimitOrOff = None
    # Rate-limit storage: in memory (per process) unless redis_url is set.
    redis_url: SecretStr | None = None
    redis_timeout: float = Field(0.5, gt=0)  # seconds per Redis operation before fail_open applies
    storage_error_log_interval: float = Field(60.0, gt=0)  # log an unreachable storage at most this often
    # Hardening.
    server: ServerSettings = Field(default_factory=ServerSettings)  # client connections: header timeout, limits
    max_header_count: int = Field(100, ge=1)
    max_header_bytes: int = Field(16384, ge=256)  # names + values, all fields together
    # Header fields a client may never send upstream, on any route (each route's identity_header is added).
    protected_headers: list[str] = Field(default_factory=list)
    underscores_in_headers: bool = False  # False: drop names with '_' (CGI/WSGI read X_User as X-User)
    redact_query_params: list[str] = Field(default_factory=lambda: ["token", "access_token", "api_key", "key"])
    # What carries HTTP/1.1 under the httpx clients; HTTP/2 routes always use httpcore.
    upstream_transport: Literal["aiohttp", "httpcore"] = "aiohttp"
    # Bearer token for the admin ops API (webhook replay, config reload) and, on the public port,
    # for every ops endpoint but health and readiness; unset disables them there.
    admin_token: SecretStr | None = Field(None, min_length=16)
    # A bearer token that reads only {ops_prefix}/metrics on the public port (a Prometheus scrape job).
    metrics_token: SecretStr | None = Field(None, min_length=16)
    # host:port of a separate listener that serves the ops endpoints, without a token (app.assembly.ops_access).
    ops_listen: OpsListenSetting | None = None
    # Observability: one access-log line per request to stdout; spans when the OpenTelemetry SDK is installed.
    access_log: Literal["json", "text", "off"] = "json"
    access_log_flush_interval: float = Field(0.1, gt=0, le=60)  # seconds a buffered line may wait
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
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 # replaced by ``secrets_dir``
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path: Any = None
        secrets_dir: Any = None
        for source in (init_settings, env_settings, dotenv_settings):
            values = source()
            path = path or values.get("config")
            secrets_dir = secrets_dir or values.get("secrets_dir")
        file_source = _ConfigFileSource(settings_cls, Path(path) if path else None)
        dotenv = _KnownFieldsOnly(settings_cls, dotenv_settings)
        if secrets_dir is None:
            return init_settings, env_settings, dotenv, file_source
        if not Path(secrets_dir).is_dir():
            raise ConfigError(f"invalid configuration:\n  secrets_dir: {str(secrets_dir)!r} is not a directory")
        secrets = SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir)
        return init_settings, env_settings, dotenv, secrets, file_source

    def policies_for(self, route: Route) -> tuple[Resilience, EdgePolicy]:
        """``route``'s policies: its own value for each, else the top-level default; ``false`` means none.

        The one place route defaults are inherited, for resilience and edge settings alike.
        """

        def pick(own: Any, default: Any) -> Any:
            if own is False:
                return None
            own = default if own is None else own
            return None if own is False else own

        resilience = Resilience(
            balancing=pick(route.balancing, self.balancing),
            passive_health=pick(route.passive_health, self.passive_health),
            health_check=pick(route.health_check, self.health_check),
            retries=pick(route.retries, self.retries),
            circuit_breaker=pick(route.circuit_breaker, self.circuit_breaker),
            max_concurrent=pick(route.max_concurrent, self.max_concurrent),
            websocket=pick(route.websocket, self.websocket) if _allows_get(route) else None,
        )
        edge = EdgePolicy(
            auth=pick(route.auth, self.auth),
            upstream_auth=route.upstream_auth,
            cors=pick(route.cors, self.cors),
            rate_limit=pick(route.rate_limit, self.rate_limit),
        )
        return resilience, edge

    def protected_header_names(self) -> frozenset[str]:
        """``protected_headers`` plus every route's ``identity_header``: stripped from every request."""
        names = {name.lower() for name in self.protected_headers}
        for route in self.routes:
            auth = self.policies_for(route)[1].auth
            if auth is not None and auth.identity_header:
                names.add(auth.identity_header.lower())
        return frozenset(names)

    @field_validator("protected_headers")
    @classmethod
    def _valid_protected(cls, value: list[str]) -> list[str]:
        for name in value:
            header_name(name)
        return value

    @field_validator("redis_url")
    @classmethod
    def _valid_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    @field_validator("ops_prefix")
    @classmethod
    def _valid_ops_prefix(cls, value: str) -> str:
        if value == "/" or value.endswith("/"):
            raise ValueError("must look like '/_gatehouse': a leading '/', no trailing '/'")
        return plain_path(value)

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
            _, edge = self.policies_for(route)
            if edge.auth is not None and edge.auth.type == "mtls" and (self.tls is None or not self.tls.client_ca_file):
                problems.append(f"{label} -> auth: type mtls needs tls.client_ca_file (client certificates to check)")
            problems.extend(f"{label} -> rate_limit.key: {p}" for p in edge.rate_limit_key_problems())
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


def _allows_get(route: Route) -> bool:
    # A WebSocket handshake is a GET: a route that refuses GET refuses WebSockets too.
    return route.methods is None or "GET" in route.methods


def format_errors(exc: ValidationError, data: Any) -> str:
    """Turn pydantic's errors into lines that name the route and the field."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        where = _location(loc, data) or "settings"
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        shown = "" if isinstance(value, dict | list) or value is None or _secret(loc, value) else f" (got {value!r})"
        lines.append(f"{where}: {message}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


_NAMED_LISTS = {"routes": "(route)", "webhooks": "(webhook)"}

# Fields whose values an error message must never show, and the values ``${...}`` put in the file.
_SECRET_FIELDS = frozenset(
    {"secret", "secrets", "token", "password", "client_secret", "keys", "users"}
    | {"admin_token", "redis_url", "webhook_store", "public_key", "signing_secret"}
)
SUBSTITUTED: ContextVar[frozenset[str]] = ContextVar("gatehouse_substituted", default=frozenset())


def _secret(loc: list[Any], value: Any) -> bool:
    if any(part in _SECRET_FIELDS for part in loc):
        return True
    text = str(value)
    return any(secret in text for secret in SUBSTITUTED.get())


def _location(loc: list[Any], data: Any) -> str:
    if len(loc) >= 2 and loc[0] in _NAMED_LISTS and isinstance(loc[1], int):
        return _named_location(str(loc[0]), loc[1], loc[2:], data)
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).removeprefix(".")


def _named_location(kind: str, index: int, rest: list[Any], data: Any) -> str:
    """``routes[1] 'users' -> upstream``: the list entry by index and name, then the field."""
    raw = data.get(kind) if isinstance(data, dict) else None
    name = None
    if isinstance(raw, list) and index < len(raw) and isinstance(raw[index], dict):
        name = raw[index].get("name")
    parts = [part for part in rest if part not in UNION_TAGS]
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)
    return f"{kind}[{index}]" + (f" {name!r}" if name else "") + f" -> {field.removeprefix('.') or _NAMED_LISTS[kind]}"


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``config`` (or ``GATEHOUSE_CONFIG``) and the environment."""
    if config is not None:
        overrides["config"] = Path(config)
    return Settings(**overrides)
