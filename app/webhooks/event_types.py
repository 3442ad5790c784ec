"""An event's type, and which targets take it. Pure.

The type comes from the endpoint's ``event_type`` source, or its scheme's
default: GitHub's ``X-GitHub-Event`` header, the body's ``type`` for Stripe and
Standard Webhooks, ``event.type`` for Slack. A target with ``event_types``
takes only events whose type matches one of them (exactly, or as a glob such
as ``invoice.*``); an event whose type is unknown goes only to targets without
a filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

import orjson

from app.config.webhooks import DeliveryTarget, EventTypeSource
from app.wire import header_value

MAX_EVENT_TYPE_LENGTH = 200


def event_type(source: EventTypeSource | None, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> str | None:
    """The event's type, or None when the source is unset, absent or not a short string."""
    if source is None:
        return None
    if source.header is not None:
        raw = header_value(headers, source.header.encode("latin-1"))
        value = raw.decode("latin-1") if raw is not None else None
    else:
        value = _pointer(body, source.json_pointer or "")
    if value is None or not value or len(value) > MAX_EVENT_TYPE_LENGTH:
        return None
    return value


def _pointer(body: bytes, pointer: str) -> str | None:
    try:
        node: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node if isinstance(node, str) else None


def takes(target: DeliveryTarget, kind: str | None) -> bool:
    """Whether ``target`` takes an event of type ``kind``."""
    if target.event_types is None:
        return True
    return kind is not None and any(fnmatchcase(kind, pattern) for pattern in target.event_types)
