"""Every route's resilience machinery, built once at start-up from the route table.

``RoutePools`` decides per route what the hot path runs: a plain route (one
URL, no retries, breaker or checks) keeps ``send_upstream`` and pays nothing;
a pooled route gets a ``PooledEndpoint`` over its ``TargetPool``; a route with
``max_concurrent`` gets a ``Bulkhead`` filter. The lifespan binds the pools'
targets to the shared clients; /upstreams and /readyz read the state here.
"""

from __future__ import annotations

import time
from typing import Any

from app.proxy.clients import UpstreamClients
from app.proxy.exchange import Filter, Handler
from app.proxy.forwarding import send_upstream
from app.proxy.routing import CompiledRoute, RouteTable
from app.resilience.bulkhead import Bulkhead
from app.resilience.endpoint import PooledEndpoint
from app.resilience.targets import Clock, TargetPool


class RoutePools:
    """Per route: its target pool (balancing, health, breaker, retry budget) and its bulkhead."""

    def __init__(self, routes: RouteTable, clock: Clock = time.monotonic) -> None:
        self.routes = routes
        self.pools = {
            r.name: TargetPool(r.name, r.targets, r.weights, r.resilience, clock) for r in routes.routes if r.pooled
        }
        self.bulkheads = {
            r.name: Bulkhead(r.name, r.resilience.max_concurrent, r.timeouts.pool)
            for r in routes.routes
            if r.resilience.max_concurrent is not None
        }

    def endpoint_for(self, route: CompiledRoute) -> Handler:
        pool = self.pools.get(route.name)
        return send_upstream if pool is None else PooledEndpoint(route, pool)

    def bulkhead_for(self, route: CompiledRoute) -> Filter | None:
        """A ``FilterFactory``: the route's bulkhead, if it has ``max_concurrent``."""
        return self.bulkheads.get(route.name)

    def bind(self, clients: UpstreamClients) -> None:
        for name, pool in self.pools.items():
            for target in pool.targets:
                target.client = clients.for_target(name, target.index)

    def degraded(self) -> dict[str, str]:
        """Routes that cannot serve normally, and why."""
        return {name: reason for name, pool in self.pools.items() if (reason := pool.degraded()) is not None}

    def snapshot(self, clients: UpstreamClients) -> dict[str, Any]:
        connections: dict[str, int] = {}
        for origin, held in clients.in_use().items():
            key = origin.removesuffix(" (h2)")
            connections[key] = connections.get(key, 0) + held
        out: dict[str, Any] = {}
        for route in self.routes.routes:
            pool = self.pools.get(route.name)
            if pool is not None:
                entry = pool.snapshot(connections)
            else:
                origin = route.upstream.origin
                held = connections.get(origin, 0)
                entry = {
                    "balancing": None,
                    "degraded": None,
                    "retry_budget": None,
                    "targets": [
                        {
                            "url": origin + route.upstream.base_path,
                            "weight": 1,
                            "state": "healthy",  # not tracked: a plain route has nothing to fail over to
                            "active_health": None,
                            "ejected_for": None,
                            "ejections": 0,
                            "recent_failures": 0,
                            "breaker": None,
                            "in_flight": held,
                            "connections_in_use": held,
                        }
                    ],
                }
            bulkhead = self.bulkheads.get(route.name)
            entry["max_concurrent"] = bulkhead.limit if bulkhead else None
            entry["concurrent"] = bulkhead.in_use if bulkhead else None
            out[route.name] = entry
        return out
