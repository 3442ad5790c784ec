"""Who may read the ops endpoints, and on which listener.

Two ways to expose them, as Kong, Envoy and Traefik do:

- ``ops_listen`` set: a separate listener (``app.serving.ops_listener``) serves
  the ops endpoints and nothing else, without a token: reaching that address is
  the permission (bind it to loopback or a private network). The public port
  then answers 404 under ``ops_prefix``, except ``/healthz`` and ``/readyz``,
  which load balancers probe on the traffic port.
- ``ops_listen`` unset: the ops endpoints share the public port, and everything
  but ``/healthz``, ``/readyz`` and the static ops page needs
  ``Authorization: Bearer <admin_token>`` (``/metrics`` also takes
  ``metrics_token``, for a Prometheus scrape job). With no token configured
  they are refused (403): safe by default.

Admin actions (reload, webhook replay) need the admin token on either listener.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config.settings import Settings
from app.errors import RouteNotFound, send_problem
from app.wire import header_value, sane_request_id

# Set in the scope of every request that arrived on the ops listener.
OPS_LISTENER = "gatehouse.ops_listener"

NOT_ON_THIS_PORT = "Not Found"
REFUSED = (
    "The ops endpoints are not served on the public port without a token: set ops_listen "
    "(a separate listener) or admin_token (GATEHOUSE_ADMIN_TOKEN) and send it as a bearer token."
)


def bearer_matches(request: Request, token: SecretStr) -> bool:
    scheme, _, offered = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), expected)


def _settings(request: Request) -> Settings:
    settings: Settings = request.scope["state"]["settings"]
    return settings


def _check(request: Request, *, metrics: bool) -> None:
    if request.scope.get(OPS_LISTENER):
        return
    settings = _settings(request)
    if settings.ops_listen is not None:
        raise HTTPException(404, NOT_ON_THIS_PORT)
    tokens = [t for t in (settings.metrics_token if metrics else None, settings.admin_token) if t is not None]
    if not tokens:
        raise HTTPException(403, REFUSED)
    if not any(bearer_matches(request, token) for token in tokens):
        raise HTTPException(
            401,
            "A valid bearer token is required for the ops endpoints on the public port.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def ops_access(request: Request) -> None:
    """Dependency of every ops endpoint but health, readiness, metrics and the page."""
    _check(request, metrics=False)


def metrics_access(request: Request) -> None:
    """``/metrics``: as ``ops_access``, and ``metrics_token`` is accepted too."""
    _check(request, metrics=True)


def page_access(request: Request) -> None:
    """The ops page is static HTML with no data in it (what it reads needs the token); not on
    the public port when there is an ops listener."""
    if not request.scope.get(OPS_LISTENER) and _settings(request).ops_listen is not None:
        raise HTTPException(404, NOT_ON_THIS_PORT)


def ops_only(app: ASGIApp, is_ops_path: Callable[[str], bool]) -> ASGIApp:
    """``app`` as the ops listener serves it: ops paths only, each request marked as arriving there."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if not is_ops_path(scope["path"]):
            rid = sane_request_id(header_value(scope["headers"], b"x-request-id")).decode()
            error = RouteNotFound("Only the ops endpoints are served on this address.")
            await send_problem(send, error, instance=scope["path"], request_id=rid)
            return
        scope[OPS_LISTENER] = True
        await app(scope, receive, send)

    return serve
