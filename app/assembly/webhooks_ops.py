"""The webhook ops API under ``{ops_prefix}/webhooks``: inspect events and deliveries, replay.

Every endpoint requires the admin bearer token (``AdminDep``). Timestamps are
ISO 8601 in UTC; lists are newest first, paged with ``before=<last id>``, and
filtered by the query parameters each declares (any other is a 422).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BeforeValidator

from app.assembly.ops import OPS_REFUSED, StateDep, require_admin
from app.assembly.ops_access import ops_access
from app.assembly.ops_schema import (
    ADMIN,
    NO_WEBHOOKS,
    STORE_DOWN,
    Deliveries,
    DeliveryDetail,
    Events,
    Replayed,
    problem,
)
from app.webhooks.failures import StoreError
from app.webhooks.records import Delivery, DeliveryStatus, ReplayResult
from app.webhooks.runtime import Webhooks


def reject_unknown_query(request: Request) -> None:
    """A query parameter the endpoint does not declare is a 422, not ignored (``?stauts=dead`` lists all)."""
    known: set[str] = set()
    pending = [request.scope["route"].dependant]
    while pending:  # the endpoint's parameters and its dependencies'
        dependant = pending.pop()
        known.update(param.alias for param in dependant.query_params)
        pending.extend(dependant.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        expected = ", ".join(sorted(known)) or "none"
        raise HTTPException(422, f"Unknown query parameter(s) {', '.join(map(repr, unknown))}; expected: {expected}.")


# Every endpoint here is admin-only: the dependency sits on the router, so none can be added without it.
router = APIRouter(
    dependencies=[Depends(ops_access), Depends(require_admin), Depends(reject_unknown_query)],
    responses={**OPS_REFUSED, **ADMIN, **STORE_DOWN, **NO_WEBHOOKS},
)

Limit = Annotated[int, Query(ge=1, le=1000)]
# Ids are 64-bit integers in the store (BIGINT, SQLite INTEGER): a larger one made the driver raise (500).
MAX_ID = 2**63 - 1
Before = Annotated[int | None, Query(ge=1, le=MAX_ID)]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("give a time zone, e.g. 2030-01-01T12:00:00Z")
    return value


def _not_a_number(value: object) -> object:
    # pydantic reads a number as Unix time: ``since=2024`` would be 1970-01-01T00:33:44Z and match everything.
    if isinstance(value, int | float) or (isinstance(value, str) and _is_number(value)):
        raise ValueError("give an ISO 8601 time with a zone, e.g. 2030-01-01T12:00:00Z, not a number")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# A time range: ISO 8601 with a zone; since inclusive, until exclusive.
Since = Annotated[
    datetime | None,
    Query(description="ISO 8601 with zone; inclusive"),
    BeforeValidator(_not_a_number),
    AfterValidator(_aware),
]
Until = Annotated[
    datetime | None,
    Query(description="ISO 8601 with zone; exclusive"),
    BeforeValidator(_not_a_number),
    AfterValidator(_aware),
]


def _webhooks(state: Any) -> Webhooks:
    webhooks: Webhooks | None = state["webhooks"]
    if webhooks is None:
        raise HTTPException(404, "No webhook endpoints are configured.")
    return webhooks


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _delivery(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "endpoint": delivery.endpoint,
        "target": delivery.target,
        "provider_event_id": delivery.provider_event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": _iso(delivery.next_attempt_at),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "updated_at": _iso(delivery.updated_at),
    }


def _store_failed(exc: StoreError) -> HTTPException:
    # Our storage, not the caller's mistake: 503 so tools retry.
    return HTTPException(503, f"The webhook store is unavailable: {exc}", headers={"Retry-After": "5"})


@router.get("/events", response_model=Events)
async def list_events(
    state: StateDep,
    endpoint: str | None = None,
    provider_event_id: str | None = None,
    event_type: str | None = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    before: Before = None,
) -> dict[str, Any]:
    try:
        events = await _webhooks(state).store.list_events(
            endpoint=endpoint,
            provider_event_id=provider_event_id,
            event_type=event_type,
            since=since,
            until=until,
            limit=limit,
            before_id=before,
        )
    except StoreError as exc:
        raise _store_failed(exc) from None
    return {
        "events": [
            {
                "id": e.id,
                "endpoint": e.endpoint,
                "provider_event_id": e.provider_event_id,
                "event_type": e.event_type,
                "received_at": _iso(e.received_at),
                "deliveries": e.deliveries,
            }
            for e in events
        ]
    }


@router.get("/deliveries", response_model=Deliveries)
async def list_deliveries(
    state: StateDep,
    status: DeliveryStatus | None = None,
    endpoint: str | None = None,
    target: str | None = None,
    provider_event_id: str | None = None,
    event_type: str | None = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    before: Before = None,
) -> dict[str, Any]:
    try:
        found = await _webhooks(state).store.list_deliveries(
            status=status,
            endpoint=endpoint,
            target=target,
            provider_event_id=provider_event_id,
            event_type=event_type,
            since=since,
            until=until,
            limit=limit,
            before_id=before,
        )
    except StoreError as exc:
        raise _store_failed(exc) from None
    return {"deliveries": [_delivery(d) for d in found]}


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetail)
async def get_delivery(state: StateDep, delivery_id: DeliveryId) -> dict[str, Any]:
    try:
        found = await _webhooks(state).store.get_delivery_with_attempts(delivery_id)
    except StoreError as exc:
        raise _store_failed(exc) from None
    if found is None:
        raise HTTPException(404, f"No delivery {delivery_id}.")
    delivery, attempts = found
    return {
        **_delivery(delivery),
        "attempts_log": [
            {
                "started_at": _iso(a.started_at),
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "error": a.error,
            }
            for a in attempts
        ],
    }


@router.post(
    "/deliveries/{delivery_id}/replay",
    status_code=202,
    response_model=Replayed,
    responses={409: problem("The delivery is being attempted right now.")},
)
async def replay_delivery(state: StateDep, delivery_id: DeliveryId) -> Any:
    webhooks = _webhooks(state)
    try:
        result = await webhooks.store.replay(delivery_id)
    except StoreError as exc:
        raise _store_failed(exc) from None
    if result is ReplayResult.NOT_FOUND:
        raise HTTPException(404, f"No delivery {delivery_id}.")
    if result is ReplayResult.IN_FLIGHT:
        raise HTTPException(409, f"Delivery {delivery_id} is being attempted right now; replay it afterwards.")
    webhooks.dispatcher.deliver_soon([delivery_id])
    return JSONResponse({"replayed": delivery_id}, status_code=202)


@router.post("/endpoints/{name}/replay-dead", status_code=202, response_model=Replayed)
async def replay_dead(state: StateDep, name: str) -> Any:
    webhooks = _webhooks(state)
    if not any(endpoint.name == name for endpoint in state["settings"].webhooks):
        raise HTTPException(404, f"No webhook endpoint {name!r}.")
    try:
        count = await webhooks.store.replay_dead(name)
    except StoreError as exc:
        raise _store_failed(exc) from None
    webhooks.dispatcher.wake()
    return JSONResponse({"replayed": count}, status_code=202)
