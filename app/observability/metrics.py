"""Prometheus metrics: one registry per app, label children bound per route at start-up.

Labels are route names, method (from a closed set), status class, error
kind, never raw paths, so the series count is bounded by the route table.
``RouteMetrics`` holds a route's pre-bound children; the gateway calls it
once per request, which costs a few attribute lookups and locked adds.

State that already lives in objects (breaker state, ejections, webhook queue
depth) is read at scrape time by ``StateCollector`` instead of being counted
on the hot path.

With ``--workers`` > 1 the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before any
worker starts; counters and histograms are then summed over workers at scrape
time (prometheus-client's multiprocess mode), while the scrape-time state
(breakers, queue depth, build info, the ``process_*`` metrics) is that of the
worker that answered.

A scrape that asks for OpenMetrics (``Accept: application/openmetrics-text``,
as Prometheus does) gets it; anything else gets the classic text format.
"""

from __future__ import annotations

import os
import platform
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.values import MutexValue

from app import __version__

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
NO_ROUTE = "(none)"  # requests no route matched (404s, malformed targets)
# Upstream error kinds, as ``map_upstream_errors`` classifies them.
ERROR_KINDS = ("connect", "timeout", "reset", "pool")
BREAKER_STATES = ("closed", "half_open", "open")
# Whole requests include long streams (downloads, server-sent events), so the buckets run to an hour;
# an upstream attempt ends at the response headers, so its buckets stop at two minutes.
REQUEST_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"),
)  # fmt: skip
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, float("inf"))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def unlocked_add(value: Any) -> Callable[[float], None]:
    """``value.inc`` without its lock, for a prometheus-client ``MutexValue`` (the in-process kind).

    ``MutexValue.inc`` takes a ``threading.Lock`` for each add: 3.1k instructions a call
    (callgrind), seven calls a proxied request. The values bound here are added to only by
    the gateway, which runs on the event loop's one thread, so there is no other writer to
    exclude; a scrape reads under the lock and sees the float before or after an add. A
    file-backed value (multiprocess mode) keeps its own ``inc``.
    """
    if type(value) is not MutexValue:
        return value.inc  # type: ignore[no-any-return]

    def add(amount: float) -> None:
        value._value += amount

    return add


class BoundValue:
    """One counter or gauge child's value, added to in one call (``inc``; a gauge's ``dec`` is ``inc(-1)``).

    prometheus-client's ``Counter.inc`` checks the amount and that the metric has
    no unbound labels, then adds under the value's lock: four Python calls for one
    add, several times per request. The checks hold by construction here (a bound
    child, amounts of 1 or -1), so the hot path adds to the child's value directly
    (``_value``: a ``MutexValue``, or in multiprocess mode a file-backed value with
    the same ``inc``). ``tests/unit/test_metrics.py`` pins the result against the
    library's own methods.
    """

    __slots__ = ("inc",)

    def __init__(self, child: Counter | Gauge) -> None:
        self.inc: Callable[[float], None] = unlocked_add(child._value)


class BoundHistogram:
    """A histogram child's ``observe``: the sum and the one bucket it falls in, no label or exemplar checks."""

    __slots__ = ("_add_sum", "_bounds", "_add_bucket")

    def __init__(self, child: Histogram) -> None:
        self._add_sum: Callable[[float], None] = unlocked_add(child._sum)
        self._bounds: list[float] = list(child._upper_bounds)
        self._add_bucket: list[Callable[[float], None]] = [unlocked_add(bucket) for bucket in child._buckets]

    def observe(self, amount: float) -> None:
        self._add_sum(amount)
        # The first bucket whose upper bound is >= amount, as Histogram.observe picks it (the last is +Inf).
        self._add_bucket[bisect_left(self._bounds, amount)](1)


class RouteMetrics:
    """One route's pre-bound metric children (see the module docstring)."""

    __slots__ = (
        "name",
        "_requests",
        "_requests_family",
        "duration",
        "upstream_duration",
        "errors",
        "retries",
        "rate_limited",
    )

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        self._requests_family = metrics.requests
        self._requests: dict[tuple[str, int], BoundValue] = {}
        self.duration = BoundHistogram(metrics.duration.labels(name))
        self.upstream_duration = BoundHistogram(metrics.upstream_duration.labels(name))
        self.errors = {kind: metrics.upstream_errors.labels(name, kind) for kind in ERROR_KINDS}
        self.retries = metrics.retries.labels(name)
        self.rate_limited = metrics.rate_limited.labels(name)

    def request(self, method: str, status: int, seconds: float) -> None:
        key = (method, status // 100)
        child = self._requests.get(key)
        if child is None:
            label = method if method in METHODS else "OTHER"
            klass = STATUS_CLASSES[min(max(status // 100, 1), 5) - 1]
            child = self._requests[key] = BoundValue(self._requests_family.labels(self.name, label, klass))
        child.inc(1)
        self.duration.observe(seconds)


class WebSocketMetrics:
    """One route's pre-bound WebSocket children: open connections, and messages and bytes per direction."""

    __slots__ = ("open", "messages", "bytes")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.open = metrics.websocket_open.labels(name)
        self.messages = {d: metrics.websocket_messages.labels(name, d) for d in WEBSOCKET_DIRECTIONS}
        self.bytes = {d: metrics.websocket_bytes.labels(name, d) for d in WEBSOCKET_DIRECTIONS}


# "to_upstream": messages from the client relayed to the upstream; "to_client": the other way.
WEBSOCKET_DIRECTIONS = ("to_upstream", "to_client")


class Metrics:
    """The app's metric families and its registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gatehouse_requests",
            "Proxied requests, by route, method and status class.",
            ["route", "method", "status_class"],
            registry=r,
        )
        self.duration = Histogram(
            "gatehouse_request_duration_seconds",
            "Whole-request latency (to the last byte relayed), by route.",
            ["route"],
            registry=r,
            buckets=REQUEST_BUCKETS,
        )
        self.upstream_duration = Histogram(
            "gatehouse_upstream_duration_seconds",
            "Upstream latency per attempt (request sent to response headers), by route.",
            ["route"],
            registry=r,
            buckets=UPSTREAM_BUCKETS,
        )
        self.upstream_errors = Counter(
            "gatehouse_upstream_errors",
            "Failed upstream attempts, by route and kind (connect, timeout, reset, pool).",
            ["route", "kind"],
            registry=r,
        )
        self.in_flight = Gauge(
            "gatehouse_requests_in_flight",
            "Proxied requests being served now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.retries = Counter(
            "gatehouse_retries", "Upstream attempts that were retries, by route.", ["route"], registry=r
        )
        self.rate_limited = Counter(
            "gatehouse_rate_limited", "Requests refused by a rate limit (429), by route.", ["route"], registry=r
        )
        self.webhook_intake = Counter(
            "gatehouse_webhook_intake",
            "Webhooks received, by endpoint and outcome (accepted, rejected, duplicate).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.webhook_attempts = Counter(
            "gatehouse_webhook_delivery_attempts",
            "Webhook delivery attempts, by endpoint and outcome (delivered, failed, dead).",
            ["endpoint", "outcome"],
            registry=r,
        )
        # Deprecated: the same count under its old name, kept for one release so dashboards can move.
        self.webhook_deliveries = Counter(
            "gatehouse_webhook_deliveries",
            "DEPRECATED, use gatehouse_webhook_delivery_attempts_total (same count, removed in the next release).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.websocket_open = Gauge(
            "gatehouse_websocket_connections",
            "Proxied WebSocket connections open now, by route.",
            ["route"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.websocket_messages = Counter(
            "gatehouse_websocket_messages",
            "WebSocket messages relayed, by route and direction (to_upstream, to_client).",
            ["route", "direction"],
            registry=r,
        )
        self.websocket_bytes = Counter(
            "gatehouse_websocket_bytes",
            "WebSocket message payload bytes relayed, by route and direction (to_upstream, to_client).",
            ["route", "direction"],
            registry=r,
        )
        self.no_route = RouteMetrics(self, NO_ROUTE)
        self._state = StateCollector()
        self._state.sources.append(build_info)
        r.register(self._state)
        self._process = ProcessCollector(registry=r)
        self.webhook_queue = WebhookQueue()
        self._state.sources.append(self.webhook_queue.collect)

    async def refresh(self, state: Mapping[str, Any]) -> None:
        """Read what needs awaiting before a scrape: the webhook queue, if ``state`` has webhooks."""
        await self.webhook_queue.refresh(state.get("webhooks"))

    def for_route(self, name: str) -> RouteMetrics:
        return RouteMetrics(self, name)

    def for_websocket(self, name: str) -> WebSocketMetrics:
        return WebSocketMetrics(self, name)

    def watch(self, source: Callable[[], Iterable[Metric]]) -> None:
        """Have ``source`` add metrics read from live state at each scrape."""
        self._state.sources.append(source)

    def webhook_received(self, endpoint: str, outcome: str) -> None:
        """The webhooks intake's hook: one call per webhook received."""
        self.webhook_intake.labels(endpoint, outcome).inc()

    def webhook_attempted(self, endpoint: str, outcome: str) -> None:
        """The webhook dispatcher's hook: one call per delivery attempt."""
        self.webhook_attempts.labels(endpoint, outcome).inc()
        self.webhook_deliveries.labels(endpoint, outcome).inc()

    def _scrape_registry(self) -> CollectorRegistry:
        if multiprocess_dir() is None:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self._state)
        registry.register(self._process)
        return registry

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """A scrape's body and content type, in the format ``accept`` asks for; summed over workers."""
        encode, content_type = choose_encoder(accept)
        return encode(self._scrape_registry()), content_type

    def route_counts(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{route: {"requests": {status_class: n}, "upstream_errors": {kind: n}}}`` since start-up."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for family in self._scrape_registry().collect():
            if family.name == "gatehouse_requests":
                key, label = "requests", "status_class"
            elif family.name == "gatehouse_upstream_errors":
                key, label = "upstream_errors", "kind"
            else:
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                counts = out.setdefault(sample.labels["route"], {"requests": {}, "upstream_errors": {}})[key]
                counts[sample.labels[label]] = counts.get(sample.labels[label], 0) + sample.value
        return out


class StateCollector(Collector):
    """Scrape-time metrics read from live objects (breakers, ejections, webhook queue)."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Iterable[Metric]]] = []

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source()


def upstream_state_metrics(snapshot: Callable[[], dict[str, Any]]) -> Callable[[], Iterable[Metric]]:
    """Ejections and breaker state per target, from the pools (``RoutePools.pools``)."""

    def collect() -> Iterable[Metric]:
        ejections = CounterMetricFamily(
            "gatehouse_target_ejections",
            "Times each target was ejected by passive health checks.",
            labels=["route", "target"],
        )
        ejected = GaugeMetricFamily(
            "gatehouse_target_ejected", "1 while the target is ejected.", labels=["route", "target"]
        )
        breaker = GaugeMetricFamily(
            "gatehouse_breaker_state",
            "1 for the circuit breaker's current state (closed, half_open, open), 0 for the others, per target.",
            labels=["route", "target", "state"],
        )
        for route, pool in snapshot().items():
            for target in pool.targets:
                ejections.add_metric([route, target.url], target.ejected_total)
                ejected.add_metric([route, target.url], 1.0 if target.passive.ejected(pool.clock()) else 0.0)
                if target.breaker is not None:
                    current = target.breaker.state(pool.clock())
                    for state in BREAKER_STATES:
                        breaker.add_metric([route, target.url, state], 1.0 if state == current else 0.0)
        return [ejections, ejected, breaker]

    return collect


def build_info() -> Iterable[Metric]:
    """``gatehouse_build_info``: always 1; the labels say what is running (join on it in queries)."""
    info = GaugeMetricFamily(
        "gatehouse_build_info",
        "Always 1; labelled with the Gatehouse version and the Python that runs it.",
        labels=["version", "python_version", "python_implementation"],
    )
    info.add_metric([__version__, platform.python_version(), platform.python_implementation()], 1.0)
    return [info]


class WebhookQueue(Collector):
    """Queue depth and oldest due age of the webhook store, as of the last ``refresh``.

    The store's ``count_due()`` and ``oldest_due_age()`` are coroutines (they
    query the database), so the scrape endpoint awaits ``refresh`` first and
    ``collect`` reports what it read. The queue is shared by every worker, so
    the answering worker's reading is the whole truth. Nothing is exported
    while webhooks are not configured.
    """

    def __init__(self) -> None:
        self._reading: tuple[int, float] | None = None

    async def refresh(self, webhooks: Any) -> None:
        store = getattr(webhooks, "store", None)
        if store is None:
            self._reading = None
            return
        self._reading = (await store.count_due(), (await store.oldest_due_age()) or 0.0)

    def collect(self) -> Iterator[Metric]:
        if self._reading is None:
            return
        depth, age = self._reading
        queued = GaugeMetricFamily("gatehouse_webhook_queue_depth", "Webhook deliveries due for an attempt now.")
        queued.add_metric([], float(depth))
        yield queued
        oldest = GaugeMetricFamily(
            "gatehouse_webhook_oldest_due_seconds", "Seconds the longest-waiting due delivery has waited (0 if none)."
        )
        oldest.add_metric([], float(age))
        yield oldest
