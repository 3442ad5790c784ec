"""Ops endpoints under ``ops_prefix``: liveness, readiness, the route table."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.errors import PROBLEM_CONTENT_TYPE, problem_body
from app.lifespan import State

router = APIRouter()


def _state(request: Request) -> State:
    state: State = request.scope["state"]
    return state


StateDep = Annotated[State, Depends(_state)]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> Any:
    """Settings are loaded and the upstream clients are open."""
    if state["clients"].closed:
        body = problem_body(
            503, "Not ready", "Upstream clients are closed.", type_uri="urn:gatehouse:problem:not-ready"
        )
        return Response(body, status_code=503, media_type=PROBLEM_CONTENT_TYPE.decode())
    return {"status": "ready", "routes": len(state["routes"].routes)}


@router.get("/routes")
async def routes(state: StateDep) -> dict[str, Any]:
    """The resolved route table. Header values are left out: they may be secrets."""
    out = []
    for compiled in state["routes"].routes:
        route = compiled.route
        out.append(
            {
                "name": route.name,
                "prefix": route.prefix,
                "upstream": route.upstream,
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
