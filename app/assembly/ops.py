"""Ops endpoints under ``ops_prefix``: liveness, readiness, the route table, upstream state,
metrics, config reload, and the ops page."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.assembly.fastapi_v1 import check_v1_models_without_importing_v1
from app.assembly.lifespan import State
from app.assembly.ops_access import metrics_access, ops_access, page_access
from app.assembly.ops_schema import ADMIN, Health, Readiness, Reloaded, openapi_document, problem
from app.assembly.problems import problem_response
from app.assembly.reload import NotReloadable, ReloadRejected

OPS_PAGE = (Path(__file__).parent.parent / "observability" / "ops_page.html").read_bytes()

# Before the first route is defined: FastAPI would import pydantic.v1 to check it (app.assembly.fastapi_v1).
check_v1_models_without_importing_v1()
router = APIRouter()


def _state(request: Request) -> State:
    state: State = request.scope["state"]
    return state


StateDep = Annotated[State, Depends(_state)]


# Declares the admin scheme in the OpenAPI document; auto_error=False so the 401 is ours (problem+json).
_bearer = HTTPBearer(auto_error=False, description="The admin_token (GATEHOUSE_ADMIN_TOKEN).")


def require_admin(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> None:
    """Admin endpoints need ``Authorization: Bearer <admin_token>``; unset, they are off."""
    token = state["settings"].admin_token
    if token is None:
        raise HTTPException(403, "The admin API is disabled: set admin_token (GATEHOUSE_ADMIN_TOKEN) to use it.")
    offered = credentials.credentials.strip().encode() if credentials is not None else b""
    if not offered or not hmac.compare_digest(offered, token.get_secret_value().encode()):
        raise HTTPException(401, "A valid admin bearer token is required.", headers={"WWW-Authenticate": "Bearer"})


AdminDep = Annotated[None, Depends(require_admin)]
# Every endpoint but health and readiness is behind ``ops_access`` (``app.assembly.ops_access``): on
# the public port a bearer token, and nothing at all there when ``ops_listen`` is set.
OpsAccess = [Security(_bearer), Depends(ops_access)]
OPS_REFUSED: dict[int | str, dict[str, Any]] = {
    401: problem("On the public port: no valid bearer token.", **{"WWW-Authenticate": "The scheme to use: Bearer."}),
    403: problem("On the public port: no admin_token (or metrics_token) is set, and no ops_listen."),
    404: problem("On the public port while ops_listen is set: the ops endpoints are served there."),
}


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: problem("Draining for shutdown, or not started.")})
async def readyz(request: Request, state: StateDep) -> Any:
    """Ready to take traffic: clients open and not draining.

    A route with no healthy target is reported under ``degraded`` but keeps
    the answer 200: taking the whole gateway out of rotation for one sick
    upstream would turn it into an outage of every route.
    """
    generation = state["gateway"].generation
    clients = generation.clients
    if state["drain"].draining or clients is None or clients.closed:
        reason = "Gatehouse is draining for shutdown." if state["drain"].draining else "Upstream clients are closed."
        return problem_response(request, 503, reason, None, title="Not ready", slug="not-ready")
    degraded = generation.pools.degraded()
    return {
        "status": "degraded" if degraded else "ready",
        "routes": len(generation.routes.routes),
        "degraded": degraded,
    }


@router.get("/upstreams", dependencies=OpsAccess, responses=OPS_REFUSED)
async def upstreams(state: StateDep) -> dict[str, Any]:
    """Every route's targets: health, ejection, breaker state, requests in flight, connections."""
    generation = state["gateway"].generation
    assert generation.clients is not None
    return {"routes": generation.pools.snapshot(generation.clients)}


@router.get("/routes", dependencies=OpsAccess, responses=OPS_REFUSED)
async def routes(state: StateDep) -> dict[str, Any]:
    """The resolved route table. Header values are left out: they may be secrets."""
    out = []
    for compiled in state["gateway"].generation.routes.routes:
        route = compiled.route
        out.append(
            {
                "name": route.name,
                "prefix": route.prefix,
                "upstream": route.upstream,
                "resilience": compiled.resilience.model_dump(),
                "strip_prefix": route.strip_prefix,
                "methods": route.methods,
                "timeout": compiled.timeouts.model_dump(),
                "preserve_host": route.preserve_host,
                "http2": route.http2,
                "max_body_bytes": route.max_body_bytes,
                "request_headers": {
                    "set": sorted(route.request_headers.set),
                    "remove": route.request_headers.remove,
                },
                "response_headers": {
                    "set": sorted(route.response_headers.set),
                    "remove": route.response_headers.remove,
                },
            }
        )
    return {"routes": out}


_EXPOSITION = {"schema": {"type": "string"}}


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Security(_bearer), Depends(metrics_access)],
    responses={
        200: {
            "description": "Prometheus text format, or OpenMetrics if the Accept header asks for it.",
            "content": {"text/plain": _EXPOSITION, "application/openmetrics-text": _EXPOSITION},
        },
        **OPS_REFUSED,
    },
)
async def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus text format, or OpenMetrics if asked (summed over workers when there are several)."""
    metrics = state["gateway"].metrics
    await metrics.refresh(state)
    body, content_type = metrics.exposition(request.headers.get("accept", ""))
    return Response(body, headers={"content-type": content_type})


@router.get("/stats", dependencies=OpsAccess, responses=OPS_REFUSED)
async def stats(state: StateDep) -> dict[str, Any]:
    """Per-route request counts by status class and upstream errors by kind, since start-up (the ops page)."""
    return {"routes": state["gateway"].metrics.route_counts()}


@router.post(
    "/reload",
    status_code=200,
    response_model=Reloaded,
    response_model_exclude_unset=True,
    dependencies=OpsAccess,
    responses={
        **OPS_REFUSED,
        **ADMIN,
        409: problem("Gatehouse was not started from a config file: nothing to re-read."),
        422: problem("The new configuration is invalid; the current one keeps serving (errors: field, message)."),
    },
)
async def reload(request: Request, state: StateDep, _admin: AdminDep) -> Any:
    """Re-read the config file and swap the route table; an invalid file changes nothing (422)."""
    try:
        return await state["reloader"].reload()
    except NotReloadable as exc:
        return problem_response(request, 409, exc.detail, None, title="Nothing to reload", slug="not-reloadable")
    except ReloadRejected as exc:
        return problem_response(
            request,
            422,
            exc.detail,
            None,
            title="Invalid configuration",
            slug="invalid-config",
            extra={"errors": exc.errors},
        )


@router.get("/openapi.json", dependencies=OpsAccess, responses={**OPS_REFUSED, **ADMIN})
async def openapi(request: Request, _admin: AdminDep) -> JSONResponse:
    """This document: the ops API in OpenAPI 3.1."""
    return JSONResponse(openapi_document(request.app))


@router.get(
    "/",
    response_class=HTMLResponse,
    dependencies=[Depends(page_access)],
    responses={404: OPS_REFUSED[404]},
)
async def ops_page() -> Response:
    """The ops page: static HTML and JavaScript that reads the endpoints above."""
    return Response(OPS_PAGE, media_type="text/html; charset=utf-8", headers={"cache-control": "no-store"})
