"""The ops API's OpenAPI document: response models, the problem+json answers, the admin security scheme.

FastAPI builds the document from the ops routes (the proxy and the webhook
intake are plain ASGI and not in it). What FastAPI cannot see is added here:
every error is ``application/problem+json`` (RFC 9457), never FastAPI's
default validation body, so each operation lists its problem answers, and the
``Problem`` schema is added to the components.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict

from app import __version__
from app.webhooks.records import DeliveryStatus

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


class Problem(BaseModel):
    """An RFC 9457 problem document, as every error of Gatehouse is answered."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None


def problem(description: str, **headers: str) -> dict[str, Any]:
    """An OpenAPI response entry: ``description``, answered as problem+json (with ``headers``)."""
    entry: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": PROBLEM_REF}},
    }
    if headers:
        entry["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return entry


INVALID: dict[int | str, dict[str, Any]] = {422: problem("A parameter is malformed or out of range.")}
ADMIN: dict[int | str, dict[str, Any]] = {
    401: problem("No valid admin bearer token.", **{"WWW-Authenticate": "The scheme to use: Bearer."}),
    403: problem("The admin API is disabled: no admin_token is set."),
    **INVALID,
}
STORE_DOWN: dict[int | str, dict[str, Any]] = {
    503: problem("The webhook store is unavailable.", **{"Retry-After": "Seconds to wait"})
}
NO_WEBHOOKS: dict[int | str, dict[str, Any]] = {404: problem("No webhook endpoints are configured, or no such item.")}


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "degraded"]
    routes: int
    degraded: dict[str, str]


class Reloaded(BaseModel):
    generation: int
    routes: list[str]
    restart_required: list[str]
    workers: str | None = None  # only under --workers N: they restart one by one with the new file


class Replayed(BaseModel):
    replayed: int


class Event(BaseModel):
    id: int
    endpoint: str
    provider_event_id: str | None
    event_type: str | None
    received_at: str
    deliveries: int


class Events(BaseModel):
    events: list[Event]


class Delivery(BaseModel):
    id: int
    event_id: int
    endpoint: str
    target: str
    provider_event_id: str | None
    event_type: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    updated_at: str


class Deliveries(BaseModel):
    deliveries: list[Delivery]


class Attempt(BaseModel):
    started_at: str
    duration_ms: int
    status_code: int | None
    error: str | None


class DeliveryDetail(Delivery):
    attempts_log: list[Attempt]


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The ops API's OpenAPI 3.1 document (cached on ``app`` after the first call)."""
    if app.openapi_schema is None:
        document = get_openapi(
            title="Gatehouse ops API",
            version=__version__,
            description="Health, readiness, route table, upstream state, metrics, reload and the webhook ops API. "
            "Errors are application/problem+json (RFC 9457).",
            routes=app.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        app.openapi_schema = document
    return app.openapi_schema
