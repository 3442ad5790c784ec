"""A route's targets and their live state: in flight, health, breaker (the pool).

``TargetPool.choose`` returns an available target (not ejected, passing its
checks if it has any, breaker not open), preferring ones this request has not
tried yet. Outcomes come back through ``record_success``/``record_failure``,
which drive the breaker and passive health. State changes are logged; the pool
never ejects its last healthy target (it logs an error and reports the route
as degraded in /readyz instead), because a sick target still answers some
requests and no target answers none.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.config.routes import Resilience
from app.config.upstream import Upstream
from app.errors import CircuitOpen, NoHealthyTarget
from app.resilience.balancing import balancer_for
from app.resilience.breaker import CircuitBreaker
from app.resilience.budget import RetryBudget
from app.resilience.health import ActiveHealth, PassiveHealth

log = logging.getLogger("gatehouse.resilience")

Clock = Callable[[], float]


@dataclass(eq=False, slots=True)
class Target:
    """One upstream instance of a route."""

    index: int
    upstream: Upstream
    weight: int
    passive: PassiveHealth
    breaker: CircuitBreaker | None
    active: ActiveHealth | None
    origin: httpx.URL = field(init=False)
    host: bytes = field(init=False)
    in_flight: int = 0
    ejected_total: int = 0  # every ejection since start-up (the metrics' counter)
    client: httpx.AsyncClient | None = None  # bound in the lifespan

    def __post_init__(self) -> None:
        self.origin = httpx.URL(self.upstream.origin)
        self.host = self.upstream.authority.encode()

    @property
    def url(self) -> str:
        return self.upstream.origin + self.upstream.base_path

    def finished(self) -> None:
        """An exchange with this target ended (its response was closed)."""
        self.in_flight -= 1

    def healthy(self, now: float) -> bool:
        """Not ejected and, if checked, passing its checks (the breaker aside)."""
        return not self.passive.ejected(now) and (self.active is None or self.active.state == "healthy")


class TargetPool:
    """The targets of one route, the balancer over them, and the route's retry budget."""

    def __init__(
        self,
        route_name: str,
        targets: tuple[Upstream, ...],
        weights: tuple[int, ...],
        resilience: Resilience,
        clock: Clock = time.monotonic,
    ) -> None:
        self.route = route_name
        self.clock = clock
        passive = resilience.passive_health
        breaker = resilience.circuit_breaker
        checks = resilience.health_check
        self.targets = tuple(
            Target(
                index=index,
                upstream=upstream,
                weight=weight,
                passive=PassiveHealth(passive.max_failures, passive.window, passive.ejection, passive.max_ejection),
                breaker=CircuitBreaker(breaker.failure_threshold, breaker.reset_timeout, breaker.half_open_requests)
                if breaker
                else None,
                active=ActiveHealth(checks.healthy_threshold, checks.unhealthy_threshold) if checks else None,
            )
            for index, (upstream, weight) in enumerate(zip(targets, weights, strict=True))
        )
        self.balancing = resilience.balancing
        self._balancer = balancer_for(resilience.balancing, len(self.targets))
        retries = resilience.retries
        self.budget = RetryBudget(retries.budget, retries.min_per_second) if retries else None
        self.last_target_failing = False  # the last healthy target hit max_failures and was spared

    def _available(self, now: float) -> list[Target]:
        return [t for t in self.targets if t.healthy(now) and (t.breaker is None or t.breaker.allows(now))]

    def choose_would_find(self) -> bool:
        """Whether ``choose`` would find a target now (without choosing one)."""
        return bool(self._available(self.clock()))

    def choose(self, tried: Collection[Target] = ()) -> Target | None:
        """An available target, untried ones first; ``None`` if there is none at all."""
        now = self.clock()
        available = self._available(now)
        fresh = [t for t in available if t not in tried] if tried else available
        candidates = fresh or available
        if not candidates:
            return None
        target = self._balancer.choose(candidates)
        assert isinstance(target, Target)
        if target.breaker is not None:
            target.breaker.acquire(now)  # claims a half-open trial slot
        return target

    def unavailable(self) -> CircuitOpen | NoHealthyTarget:
        """The error for a request that found no available target."""
        now = self.clock()
        healthy = [t for t in self.targets if t.healthy(now)]
        if not healthy:
            return NoHealthyTarget(
                f"Route {self.route!r}: no upstream target is passing its health checks.",
                headers=[(b"retry-after", b"1")],
            )
        wait = min(t.breaker.retry_after(now) for t in healthy if t.breaker is not None)
        return CircuitOpen(
            f"Route {self.route!r}: the circuit breaker is open for every upstream target.",
            headers=[(b"retry-after", str(max(1, math.ceil(wait))).encode())],
        )

    def record_success(self, target: Target) -> None:
        if target.breaker is not None:
            target.breaker.record_success(self.clock())
        if self.last_target_failing:
            self.last_target_failing = False
            log.warning("route %r: target %s answers again; route no longer degraded", self.route, target.url)

    def record_failure(self, target: Target, reason: str) -> None:
        now = self.clock()
        if target.breaker is not None and target.breaker.record_failure(now):
            log.warning(
                "route %r: circuit breaker for %s opened for %.1fs (%s)",
                self.route,
                target.url,
                target.breaker.reset_timeout,
                reason,
            )
        if not target.passive.record_failure(now):
            return
        others = [t for t in self.targets if t is not target and t.healthy(now)]
        if others:
            cool_down = target.passive.eject(now)
            target.ejected_total += 1
            log.warning(
                "route %r: ejected %s for %.1fs after %d failures (%s); %d target(s) left",
                self.route,
                target.url,
                cool_down,
                target.passive.max_failures,
                reason,
                len(others),
            )
            return
        target.passive.spare()
        if not self.last_target_failing:
            self.last_target_failing = True
            log.error(
                "route %r: %s keeps failing (%s) but is the last healthy target: not ejected; route degraded",
                self.route,
                target.url,
                reason,
            )

    def degraded(self) -> str | None:
        """Why the route cannot serve normally, or None (shown by /readyz)."""
        now = self.clock()
        if not any(t.healthy(now) for t in self.targets):
            return "no healthy target"
        if self.last_target_failing:
            return "the last healthy target is failing"
        if all(t.breaker is not None and not t.breaker.allows(now) for t in self.targets):
            return "every circuit breaker is open"
        return None

    def snapshot(self, connections: dict[str, int]) -> dict[str, Any]:
        now = self.clock()
        out = []
        for t in self.targets:
            ejected = t.passive.ejected(now)
            if ejected:
                state = "ejected"
            elif t.active is not None and t.active.state != "healthy":
                state = t.active.state
            else:
                state = "healthy"
            out.append(
                {
                    "url": t.url,
                    "weight": t.weight,
                    "state": state,
                    "active_health": t.active.state if t.active else None,
                    "ejected_for": round(t.passive.ejected_until - now, 3) if ejected else None,
                    "ejections": t.passive.ejections,
                    "recent_failures": t.passive.failures(now),
                    "breaker": t.breaker.state(now) if t.breaker else None,
                    "in_flight": t.in_flight,
                    "connections_in_use": connections.get(t.upstream.origin, 0),
                }
            )
        return {
            "balancing": self.balancing,
            "degraded": self.degraded(),
            "retry_budget": self.budget.snapshot(now) if self.budget else None,
            "targets": out,
        }
