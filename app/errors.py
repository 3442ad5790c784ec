"""Errors the gateway answers with, and the one handler that renders them.

Every error a client can see is a ``GatewayError`` carrying its HTTP status, and
is rendered as ``application/problem+json`` (RFC 9457) with the request id::

    GatewayError
    ├── BadRequest              400  malformed or hostile request target
    │   └── AmbiguousPath       400  an upstream could read the path as another route
    ├── Unauthorized            401  missing or invalid credentials (WWW-Authenticate)
    ├── Forbidden               403  valid credentials, insufficient claims/scopes; CORS origin refused
    ├── RouteNotFound           404  no route matches the path
    ├── MethodNotAllowed        405  route exists, method is not allowed (Allow header)
    ├── RequestTimeout          408  the client sent its body too slowly
    ├── PayloadTooLarge         413  body over the route's max_body_bytes
    ├── RateLimited             429  over the route's rate limit (Retry-After, RateLimit-*)
    ├── HeadersTooLarge         431  too many header fields, or too many bytes of them
    ├── InternalError           500  a bug in the gateway (logged with its traceback)
    ├── RateLimitUnavailable    503  the rate-limit storage is down and fail_open is false
    ├── TooManyConnections      503  the process holds server.max_connections client connections
    ├── WebhookRejected         401  a webhook failed verification (which check, never which secret)
    ├── WebhookStoreUnavailable 503  the webhook could not be stored; the sender retries (Retry-After)
    └── UpstreamError           502  the upstream could not be reached or broke
        ├── UpstreamUnavailable 503  no connection free in the pool in time
        │   ├── CircuitOpen     503  every target's breaker is open (Retry-After)
        │   ├── NoHealthyTarget 503  active health checks pass on no target
        │   └── RouteOverloaded 503  the route's max_concurrent stayed full (Retry-After)
        └── UpstreamTimeout     504  connect, read or write timed out

The webhook store's own errors (``StoreError`` → ``StoreUnavailable`` ·
``SchemaTooNew``, in ``app.webhooks.failures``) are not answered as they are: intake
and the webhook ops API turn them into 503s (``WebhookStoreUnavailable``), and at
start-up any of them, ``SchemaTooNew`` included, stops the process before it takes traffic.

httpx exceptions are translated to these in one place:
``app.proxy.forwarding.map_upstream_errors``. This module imports nothing else
of the app (as httpx's ``_exceptions.py``); everything may import it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, ClassVar

import orjson

PROBLEM_CONTENT_TYPE = b"application/problem+json"
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class GatewayError(Exception):
    """Base class: a failure the gateway answers itself, with a problem body."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal gateway error"
    slug: ClassVar[str] = "internal"

    def __init__(self, detail: str, *, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or []

    @property
    def type_uri(self) -> str:
        return f"urn:gatehouse:problem:{self.slug}"


class BadRequest(GatewayError):
    status = 400
    title = "Bad request"
    slug = "bad-request"


class AmbiguousPath(BadRequest):
    """A common upstream reading of the path (decoded slashes, ``;`` parameters, case,
    trailing dots, NFKC) selects another route or leaves the route: nothing is forwarded."""

    title = "Ambiguous path"
    slug = "ambiguous-path"


class Unauthorized(GatewayError):
    status = 401
    title = "Unauthorized"
    slug = "unauthorized"

    def __init__(self, detail: str, *, challenge: bytes) -> None:
        super().__init__(detail, headers=[(b"www-authenticate", challenge)])


class Forbidden(GatewayError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class RouteNotFound(GatewayError):
    status = 404
    title = "No route"
    slug = "route-not-found"


class MethodNotAllowed(GatewayError):
    status = 405
    title = "Method not allowed"
    slug = "method-not-allowed"

    def __init__(self, detail: str, *, allow: bytes) -> None:
        super().__init__(detail, headers=[(b"allow", allow)])


class RequestTimeout(GatewayError):
    status = 408
    title = "Request timeout"
    slug = "request-timeout"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers=[(b"connection", b"close")])


class PayloadTooLarge(GatewayError):
    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


class RateLimited(GatewayError):
    status = 429
    title = "Too many requests"
    slug = "rate-limited"


class HeadersTooLarge(GatewayError):
    status = 431
    title = "Request header fields too large"
    slug = "headers-too-large"


class RateLimitUnavailable(GatewayError):
    status = 503
    title = "Rate limiting unavailable"
    slug = "rate-limit-unavailable"


class TooManyConnections(GatewayError):
    """The connection is over ``server.max_connections``: answered, then closed."""

    status = 503
    title = "Too many connections"
    slug = "too-many-connections"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers=[(b"connection", b"close"), (b"retry-after", b"1")])


class WebhookRejected(GatewayError):
    """A webhook failed verification; ``check`` names the test (``bad-signature``, ``stale-timestamp``...)."""

    status = 401
    title = "Webhook verification failed"
    slug = "webhook-rejected"

    def __init__(self, detail: str, *, check: str) -> None:
        super().__init__(detail)
        self.check = check


class WebhookStoreUnavailable(GatewayError):
    """Our own storage failed: never a 4xx, so the provider keeps the event and retries."""

    status = 503
    title = "Webhook storage unavailable"
    slug = "webhook-store-unavailable"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers=[(b"retry-after", str(retry_after).encode())])


class InternalError(GatewayError):
    status = 500
    title = "Internal gateway error"
    slug = "internal"


class UpstreamError(GatewayError):
    status = 502
    title = "Bad gateway"
    slug = "upstream-error"
    # What failed on the wire (connect, timeout, reset, pool), set by ``map_upstream_errors``;
    # None for the gateway's own refusals (open breaker, no healthy target, full bulkhead).
    kind: str | None = None


class UpstreamUnavailable(UpstreamError):
    status = 503
    title = "Upstream unavailable"
    slug = "upstream-unavailable"


class CircuitOpen(UpstreamUnavailable):
    slug = "circuit-open"


class NoHealthyTarget(UpstreamUnavailable):
    slug = "no-healthy-target"


class RouteOverloaded(UpstreamUnavailable):
    title = "Route overloaded"
    slug = "route-overloaded"


class UpstreamTimeout(UpstreamError):
    status = 504
    title = "Upstream timeout"
    slug = "upstream-timeout"


def problem_body(
    status: int,
    title: str,
    detail: str,
    *,
    type_uri: str = "about:blank",
    instance: str | None = None,
    request_id: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> bytes:
    """Serialise an RFC 9457 problem document (``extra``: extension members)."""
    problem: dict[str, object] = {"type": type_uri, "title": title, "status": status, "detail": detail}
    if instance is not None:
        problem["instance"] = instance
    if request_id is not None:
        problem["request_id"] = request_id
    if extra:
        problem.update(extra)
    return orjson.dumps(problem)


def render_problem(
    error: GatewayError, *, instance: str | None, request_id: str | None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body for ``error``; the single way errors become responses."""
    body = problem_body(
        error.status,
        error.title,
        error.detail,
        type_uri=error.type_uri,
        instance=instance,
        request_id=request_id,
    )
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *error.headers,
    ]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    return error.status, headers, body


async def send_problem(send: ASGISend, error: GatewayError, *, instance: str, request_id: str) -> int:
    """Answer ``error`` on an ASGI ``send`` (the proxy and the webhook intake); returns the body size."""
    status, headers, body = render_problem(error, instance=instance, request_id=request_id)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
    return len(body)
