"""Active health checks: one lifespan-managed task per checked target.

Each task sends ``GET {origin}{path}`` through the target's shared client
every ``interval`` seconds; a 2xx or 3xx within ``timeout`` passes. The first
check runs at start-up, so a target is used as soon as it has passed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio
import httpx

from app.config.routes import HealthCheck
from app.resilience.pools import RoutePools
from app.resilience.targets import Target, TargetPool

log = logging.getLogger("gatehouse.resilience")


class HealthChecks:
    def __init__(self, pools: RoutePools) -> None:
        self._pools = pools
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for route in self._pools.routes.routes:
            pool = self._pools.pools.get(route.name)
            check = route.resilience.health_check
            if pool is None or check is None:
                continue
            for target in pool.targets:
                name = f"health-check:{route.name}:{target.url}"
                self._tasks.append(asyncio.create_task(self._run(pool, target, check), name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, pool: TargetPool, target: Target, check: HealthCheck) -> None:
        url = str(target.origin.copy_with(raw_path=check.path.encode()))
        assert target.active is not None
        while True:
            passed = await _probe(target, url, check.timeout)
            if target.active.record(passed):
                level = logging.INFO if passed else logging.WARNING
                log.log(
                    level,
                    "route %r: %s is now %s (health check %s)",
                    pool.route,
                    target.url,
                    target.active.state,
                    check.path,
                )
                if not passed and pool.degraded() is not None:
                    log.error("route %r: no target passes its health checks; requests get 503", pool.route)
            await asyncio.sleep(check.interval)


async def _probe(target: Target, url: str, timeout: float) -> bool:
    client = target.client
    assert client is not None, "targets are bound to clients in the lifespan"
    try:
        with anyio.fail_after(timeout):
            response = await client.get(url, timeout=timeout)
    except (httpx.HTTPError, TimeoutError):
        return False
    return 200 <= response.status_code < 400
