"""The pooled endpoint: balancing, retries, breaker and passive health around one send.

Retry policy, in order:

- Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) or requests with
  an ``Idempotency-Key`` are retried.
- Only replayable bodies: none, or one that fits in ``retries.max_body_bytes``
  and is buffered before the first attempt. A larger body streams as usual and
  the request gets one attempt.
- Retried: network errors (connect, reset, timeout) and the statuses in
  ``retries.on``. A response is retried only before it is returned, so never
  once a byte of it has reached the client; a stream that fails later is cut
  short, not replayed.
- Each retry waits full-jitter backoff, or the upstream's ``Retry-After`` if
  longer; a ``Retry-After`` above ``max_retry_after`` is passed to the client
  instead. Each retry goes to a target not tried yet, when there is one, and
  spends from the route's retry budget.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx

from app.errors import UpstreamError
from app.outbound.fastpath import release
from app.outbound.urls import exact_url, path_and_query
from app.proxy.body import RequestBody
from app.proxy.exchange import Exchange
from app.proxy.forwarding import send_request, watch_response
from app.proxy.routing import CompiledRoute
from app.resilience.backoff import full_jitter
from app.resilience.targets import Target, TargetPool
from app.wire import header_value, parse_retry_after

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Statuses that count against a target's health and breaker, as network errors do.
FAILURE_STATUSES = frozenset({502, 503, 504})


class PooledEndpoint:
    """The pipeline's last stage for a route with targets (see the module docstring)."""

    def __init__(
        self,
        route: CompiledRoute,
        pool: TargetPool,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.route = route
        self.pool = pool
        self.retries = route.resilience.retries
        self._retry_on = frozenset(self.retries.on) if self.retries else frozenset()
        self._sleep = sleep
        self._uniform = uniform
        # The Host header names the target, unless the route preserves the client's.
        self._rewrite_host = route.headers.upstream_host is not None and len(pool.targets) > 1
        # The gateway builds the exchange's URL on the route's (first) upstream: a target there sends it as it is.
        self._on_route_origin = frozenset(t.index for t in pool.targets if t.upstream.origin == route.upstream.origin)
        # Per target, made once: what a failure in the middle of a response records.
        self._mid_response = [_failed_mid_response(pool, target) for target in pool.targets]

    async def __call__(self, exchange: Exchange) -> httpx.Response:
        retries, pool = self.retries, self.pool
        body: httpx.AsyncByteStream | None = exchange.body
        attempts = 1
        if retries is not None and retries.attempts > 1 and _may_retry(exchange):
            if exchange.body is None:
                attempts = retries.attempts
            else:
                body, replayable = await _buffer(exchange.body, exchange.headers, retries.max_body_bytes)
                attempts = retries.attempts if replayable else 1
        if pool.budget is not None:
            pool.budget.record_request(pool.clock())
        tried: list[Target] = []
        attempt = 0
        while True:
            attempt += 1
            target = pool.choose(tried)
            if target is None:
                raise pool.unavailable()
            tried.append(target)
            try:
                response = await self._send(exchange, target, body)
            except UpstreamError as exc:
                if not isinstance(exc.__cause__, httpx.PoolTimeout):  # a full local pool is not the target's fault
                    pool.record_failure(target, exc.detail)
                if attempt >= attempts or not self._spend():
                    raise
                await self._sleep(self._backoff(attempt))
                continue
            status = response.status_code
            if status in FAILURE_STATUSES:
                pool.record_failure(target, f"status {status}")
            else:
                pool.record_success(target)
            if status in self._retry_on and attempt < attempts:
                delay = self._retry_delay(attempt, response)
                if delay is not None and pool.choose_would_find() and self._spend():
                    try:
                        await response.aclose()
                        release(response)
                    finally:
                        target.finished()
                    await self._sleep(delay)
                    continue
            exchange.url = response.request.url
            return watch_response(response, target.finished, self._mid_response[target.index])

    async def _send(self, exchange: Exchange, target: Target, body: httpx.AsyncByteStream | None) -> httpx.Response:
        client = target.client
        assert client is not None, "targets are bound to clients in the lifespan"
        headers = exchange.headers
        if self._rewrite_host and headers and headers[0][0] == b"host":
            headers = [(b"host", target.host), *headers[1:]]
        url = exchange.url if target.index in self._on_route_origin else _on_origin(exchange.url, target.origin)
        target.in_flight += 1
        try:
            return await send_request(exchange, client, url, headers, body)
        except BaseException:
            target.in_flight -= 1
            raise

    def _spend(self) -> bool:
        budget = self.pool.budget
        return budget is None or budget.try_spend(self.pool.clock())

    def _backoff(self, attempt: int) -> float:
        assert self.retries is not None
        backoff = self.retries.backoff
        return full_jitter(attempt, backoff.base, backoff.cap, self._uniform)

    def _retry_delay(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying after ``response``, or None to pass it on."""
        assert self.retries is not None
        asked = parse_retry_after(header_value(response.headers.raw, b"retry-after"))
        if asked is not None and asked > self.retries.max_retry_after:
            return None
        return max(self._backoff(attempt), asked or 0.0)


def _failed_mid_response(pool: TargetPool, target: Target) -> Callable[[Exception], None]:
    def record(exc: Exception) -> None:
        pool.record_failure(target, f"failed mid-response: {type(exc).__name__}")

    return record


def _may_retry(exchange: Exchange) -> bool:
    if exchange.method in IDEMPOTENT:
        return True
    return header_value(exchange.headers, b"idempotency-key") is not None


async def _buffer(
    body: RequestBody, headers: list[tuple[bytes, bytes]], limit: int
) -> tuple[httpx.AsyncByteStream, bool]:
    """Read a small body whole so that it can be sent again; ``(stream, replayable)``."""
    declared = header_value(headers, b"content-length")
    if declared is not None and int(declared) > limit:
        return body, False
    chunks: list[bytes] = []
    size = 0
    source = body.__aiter__()
    async for chunk in source:
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return _Prefixed(chunks, source), False
    return httpx.ByteStream(b"".join(chunks)), True


class _Prefixed(httpx.AsyncByteStream):
    """Chunks already read, then the rest of the body as it arrives."""

    def __init__(self, head: list[bytes], rest: AsyncIterator[bytes]) -> None:
        self._head = head
        self._rest = rest

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._head:
            yield chunk
        async for chunk in self._rest:
            yield chunk


def _on_origin(url: httpx.URL, origin: httpx.URL) -> httpx.URL:
    """``url``'s path and query on ``origin`` (byte for byte, as the gateway built it)."""
    return exact_url(origin, *path_and_query(url))
