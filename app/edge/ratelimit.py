"""Rate limits per route with the ``limits`` library: in memory, or in Redis to share a budget.

In memory each process has its own budget; with ``redis_url`` every Gatehouse
process counts against the same keys (``gatehouse:<route>:<key>``). A storage
that fails or takes longer than ``redis_timeout`` is a storage failure: the
request passes (``fail_open``, the default) or gets 503, and the failure is
logged at most once per ``storage_error_log_interval``.

Every response of a limited route (the upstream's, and the gateway's own
errors) carries the ``RateLimit-Policy`` and ``RateLimit`` fields of
draft-ietf-httpapi-ratelimit-headers (-10 to -12): one quota policy per limit
item, named ``<route>-<window>s``; no partition key, since the key may be an
API key. A request that passed because the storage failed carries neither.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import anyio
import httpx
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from app.config.edge import RateLimit
from app.config.settings import Settings
from app.edge.fields import Fields, with_fields
from app.edge.windows import LimitsCounter, MemoryWindows, WindowCounter
from app.errors import GatewayError, RateLimited, RateLimitUnavailable
from app.proxy.exchange import Exchange, Handler
from app.wire import header_value

log = logging.getLogger("gatehouse.edge")

KeyFunction = Callable[[Exchange], str]


class RateLimitStore:
    """The storage and its strategies; one per process, opened and closed by the lifespan.

    In memory the windows are Gatehouse's own (``app.edge.windows`` says what
    the ``limits`` library's in-memory storage lacks); Redis uses ``limits``.
    """

    def __init__(self, settings: Settings) -> None:
        self.storage: RedisStorage | None = None
        self.memory: MemoryWindows | None = None
        self._strategies: dict[str, WindowCounter]
        if settings.redis_url is not None:
            url = "async+" + settings.redis_url.get_secret_value()
            self.storage = RedisStorage(
                url,
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix="gatehouse",
                socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout,
            )
            self.timeout: float | None = settings.redis_timeout * 2
            self._strategies = {
                "fixed-window": LimitsCounter(FixedWindowRateLimiter(self.storage)),
                "moving-window": LimitsCounter(MovingWindowRateLimiter(self.storage)),
            }
        else:
            self.memory = MemoryWindows()
            self.timeout = None
            self._strategies = {"fixed-window": self.memory.fixed, "moving-window": self.memory.moving}
        self.shared = settings.redis_url is not None
        self._log_interval = settings.storage_error_log_interval
        self._last_logged = -math.inf

    def strategy(self, name: str) -> WindowCounter:
        return self._strategies[name]

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_logged >= self._log_interval:
            self._last_logged = now
            log.error(
                "rate-limit storage unreachable (%s: %s); applying fail_open per route; next report in %.0fs",
                type(exc).__name__,
                exc,
                self._log_interval,
            )

    async def aclose(self) -> None:
        if self.storage is not None:
            bridge = self.storage.bridge
            client = getattr(bridge, "storage", None)
            if client is not None:
                await client.aclose()
        if self.memory is not None:
            self.memory.clear()


def key_function(key: str) -> KeyFunction:
    if key == "ip":
        return lambda exchange: exchange.client_ip
    if key in ("api_key", "subject"):
        return lambda exchange: exchange.identity or "-"
    header = key.removeprefix("header:").lower().encode()

    def by_header(exchange: Exchange) -> str:
        value = header_value(exchange.headers, header)
        return "-" if value is None else value.decode("latin-1")

    return by_header


class RateLimitFilter:
    def __init__(self, route_name: str, spec: RateLimit, store: Callable[[], RateLimitStore]) -> None:
        self._route = route_name
        self._items: list[RateLimitItem] = parse_many(spec.limit)
        self._names = policy_names(route_name, self._items)
        self._named_items = list(zip(self._names, self._items, strict=True))
        self._policy = (b"ratelimit-policy", policy_field(self._names, self._items))
        self._key = key_function(spec.key)
        self._strategy = spec.strategy
        self._fail_open = spec.fail_open
        self._store = store

    async def __call__(self, exchange: Exchange, call_next: Handler) -> httpx.Response:
        store = self._store()
        counter = store.strategy(self._strategy)
        key = self._key(exchange)
        try:
            if store.timeout is None:
                fields, refused = await self._hit(counter, key)
            else:
                with anyio.fail_after(store.timeout):
                    fields, refused = await self._hit(counter, key)
        except Exception as exc:  # any storage failure (limits wraps Redis errors; a hang is a TimeoutError)
            store.failed(exc)
            if not self._fail_open:
                raise RateLimitUnavailable(
                    f"Route {self._route!r}: the rate-limit storage is unreachable.",
                    headers=[(b"retry-after", b"1")],
                ) from None
            return await call_next(exchange)
        if refused is not None:
            raise refused
        try:
            response = await call_next(exchange)
        except GatewayError as exc:  # the gateway's own answer (502, 401, ...) carries the fields too
            exc.headers.extend(fields)
            raise
        return with_fields(response, fields)

    async def _hit(self, counter: WindowCounter, key: str) -> tuple[Fields, RateLimited | None]:
        """Count the request against each item: the response's fields, and the refusal if over one."""
        current: list[bytes] = []
        for name, item in self._named_items:
            allowed, remaining, reset_at = await counter.hit(item, self._route, key)
            reset = max(0, math.ceil(reset_at - time.time()))
            if allowed:
                current.append(b'"%s";r=%d;t=%d' % (name, remaining, reset))
                continue
            reset = max(1, reset)
            current.append(b'"%s";r=0;t=%d' % (name, reset))
            fields = [self._policy, (b"ratelimit", b", ".join(current))]
            return fields, RateLimited(
                f"Route {self._route!r} allows {item.amount} request(s) per {_window(item)}; retry in {reset}s.",
                headers=[
                    (b"retry-after", str(reset).encode()),
                    *fields,
                    # Deprecated: the fields of draft -06 and earlier, kept on 429s for one release.
                    (b"ratelimit-limit", str(item.amount).encode()),
                    (b"ratelimit-remaining", b"0"),
                    (b"ratelimit-reset", str(reset).encode()),
                ],
            )
        return [self._policy, (b"ratelimit", b", ".join(current))], None


def policy_names(route: str, items: list[RateLimitItem]) -> list[bytes]:
    """``<route>-<window seconds>s`` per item (route names need no escaping in a structured String)."""
    names: list[bytes] = []
    for item in items:
        name = f"{route}-{item.get_expiry()}s".encode()
        names.append(name if name not in names else name + b"-%d" % (len(names) + 1))
    return names


def policy_field(names: list[bytes], items: list[RateLimitItem]) -> bytes:
    """The ``RateLimit-Policy`` value: a structured List of the quota policies, made once per route."""
    return b", ".join(
        b'"%s";q=%d;w=%d' % (name, item.amount, item.get_expiry()) for name, item in zip(names, items, strict=True)
    )


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"
