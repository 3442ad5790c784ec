"""FastAPI's own errors (on the ops endpoints) as problem+json, like every other error.

The body comes from ``app.errors.problem_body``, the one serialiser; this module
only adapts Starlette's ``HTTPException`` and FastAPI's validation errors to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import PROBLEM_CONTENT_TYPE, problem_body
from app.wire import sane_request_id

log = logging.getLogger("gatehouse.ops")


def install_error_handlers(app: FastAPI) -> None:
    """Render the framework's own errors (ops endpoints) as problem+json too."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(request, exc.status_code, str(exc.detail), exc.headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # str(exc) carries source file locations; the client gets field and message only.
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return problem_response(request, 422, detail, None)

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        # A bug, not the caller's doing: the log gets the traceback, the client a problem without it.
        log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(
            request, 500, "The ops endpoint failed unexpectedly; the error is in the log.", None, slug="internal"
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)


def problem_response(
    request: Request,
    status: int,
    detail: str,
    headers: Mapping[str, str] | None,
    *,
    title: str | None = None,
    slug: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> Response:
    """A problem+json ``Response`` for an ops endpoint, with the request's id."""
    rid = sane_request_id(request.headers.get("x-request-id", "").encode() or None).decode()
    phrase = HTTPStatus(status).phrase
    slug = slug or phrase.lower().replace(" ", "-").replace("'", "")
    body = problem_body(
        status,
        title or phrase,
        detail,
        type_uri=f"urn:gatehouse:problem:{slug}",
        instance=request.url.path,
        request_id=rid,
        extra=extra,
    )
    out = Response(body, status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE.decode())
    out.headers["x-request-id"] = rid
    return out
