"""The bulkhead: at most ``max_concurrent`` exchanges per route (a pipeline filter).

An exchange holds its slot until its response is closed, so a slow stream
counts for as long as it runs. Over the limit a request waits up to the
route's pool timeout, then gets 503 with ``Retry-After``: one slow route
cannot take every connection and every worker with it.
"""

from __future__ import annotations

import anyio
import httpx

from app.errors import RouteOverloaded
from app.proxy.exchange import Exchange, Handler
from app.proxy.forwarding import watch_response


class Bulkhead:
    def __init__(self, route: str, limit: int, wait: float) -> None:
        self.route = route
        self.limit = limit
        self.wait = wait
        self._slots = anyio.Semaphore(limit)

    @property
    def in_use(self) -> int:
        return self.limit - self._slots.value

    async def __call__(self, exchange: Exchange, call_next: Handler) -> httpx.Response:
        slots = self._slots
        if slots.value:
            slots.acquire_nowait()
        else:
            acquired = False
            with anyio.move_on_after(self.wait):
                await slots.acquire()
                acquired = True
            if not acquired:
                raise RouteOverloaded(
                    f"Route {self.route!r} is at its limit of {self.limit} concurrent requests.",
                    headers=[(b"retry-after", b"1")],
                )
        try:
            response = await call_next(exchange)
        except BaseException:
            self._slots.release()
            raise
        return watch_response(response, self._slots.release)
