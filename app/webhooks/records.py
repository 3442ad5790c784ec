"""What the webhook store hands out: plain frozen records, no database handles."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

DeliveryStatus = Literal["pending", "delivering", "delivered", "dead"]


class RecordedEvent(NamedTuple):
    """``record_event``'s answer: a duplicate names the first event and creates no deliveries.

    ``claimed``: the deliveries, already leased, when the event asked for a ``lease``.
    """

    event_id: int
    duplicate: bool
    delivery_ids: tuple[int, ...]
    claimed: tuple[ClaimedDelivery, ...] = ()


class Lease(NamedTuple):
    owner: str
    seconds: float


class NewEvent(NamedTuple):
    """One verified webhook for ``write_batch``: stored with one delivery per target, pending, or
    with ``lease`` already leased to its owner with the first attempt counted (the dispatcher
    attempts them right after the answer, without a claim of their own)."""

    endpoint: str
    provider_event_id: str | None
    headers: list[tuple[bytes, bytes]]
    body: bytes
    targets: tuple[str, ...]
    event_type: str | None = None
    lease: Lease | None = None


class Claim(NamedTuple):
    """Lease one delivery now, whatever its ``next_attempt_at`` (the attempt right after intake)."""

    delivery_id: int
    owner: str
    lease_seconds: float


class Finish(NamedTuple):
    """One delivery's outcome for ``finish_deliveries``: the attempt (if any) and the new column values."""

    delivery_id: int
    owner: str
    attempt: AttemptResult | None
    values: dict[str, Any]


class ReplayResult(enum.Enum):
    REPLAYED = "replayed"
    NOT_FOUND = "not_found"
    IN_FLIGHT = "in_flight"


@dataclass(frozen=True)
class EventSummary:
    id: int
    endpoint: str
    provider_event_id: str | None
    received_at: datetime
    body_size: int
    deliveries: int = 0
    event_type: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    id: int
    endpoint: str
    provider_event_id: str | None
    received_at: datetime
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True)
class Delivery:
    id: int
    event_id: int
    endpoint: str
    target: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    # Of its event, when the query joined it (lists and details do).
    provider_event_id: str | None = None
    event_type: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        joined = row._mapping
        return cls(
            id=row.id,
            event_id=row.event_id,
            endpoint=row.endpoint,
            target=row.target,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            lease_owner=row.lease_owner,
            lease_expires_at=row.lease_expires_at,
            last_status=row.last_status,
            last_error=row.last_error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            provider_event_id=joined.get("provider_event_id"),
            event_type=joined.get("event_type"),
        )


@dataclass(frozen=True)
class ClaimedDelivery:
    """A leased delivery with what the dispatcher needs to send it."""

    delivery: Delivery
    provider_event_id: str | None
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True)
class AttemptResult:
    """One attempt as the dispatcher saw it: a status, or the error that stopped it."""

    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Attempt:
    id: int
    delivery_id: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None

    @classmethod
    def from_row(cls, row: Any) -> Attempt:
        return cls(row.id, row.delivery_id, row.started_at, row.duration_ms, row.status_code, row.error)
