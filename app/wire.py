"""HTTP as it is on the wire, for every layer (pure; imports nothing else of the app).

Headers are ``list[tuple[bytes, bytes]]`` with lower-case names, as ASGI gives
them; never a ``dict``, which would merge repeated fields such as ``Set-Cookie``.
This module holds the one header lookup, the one hop-by-hop set, the one
``Retry-After`` parser and the one request-id rule that the proxy, the edge,
resilience and webhooks all share.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, NewType

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 connection-specific fields, plus the proxy-only pair.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of ``name`` (lower-case), matched case-insensitively; None if absent."""
    for key, value in headers:
        if key == name or (len(key) == len(name) and key.lower() == name):
            return value
    return None


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of ``name`` (lower-case), matched case-insensitively, in order."""
    return [value for key, value in headers if key == name or (len(key) == len(name) and key.lower() == name)]


def parse_retry_after(value: bytes | str | None, *, now: float | None = None, cap: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks for (delay-seconds or HTTP-date), at least 0 and at most ``cap``.

    None when the value is absent or unusable, so the caller's own schedule applies.
    ``now`` is a Unix time (default: the current time).
    """
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    if text.isascii() and text.isdigit():
        seconds = float(int(text[:12]))
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are always GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    seconds = max(seconds, 0.0)
    return seconds if cap is None else min(seconds, cap)


# A request ID as the gateway keeps, forwards, answers and logs it: the client's X-Request-ID when it
# matches ``_SANE_REQUEST_ID``, else one of ours (hex). The type says it was checked: the access log
# writes it between a JSON string's quotes without escaping (none of these characters needs it).
if TYPE_CHECKING:
    RequestId = NewType("RequestId", bytes)
else:  # the plain type at run time: calling a NewType is a Python frame, and these run per request
    RequestId = bytes

# ``fullmatch``, not ``match`` with ``$``: ``$`` also matches before a final newline.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+/=@-]{1,128}")
_ID_PREFIX = os.urandom(8).hex().encode()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> RequestId:
    """32 hex characters: a random per-process prefix and a counter (unique, and no syscall)."""
    # Bytes formatting: 1.1k instructions less than an f-string.
    return RequestId(_ID_PREFIX + b"%016x" % next(_ID_COUNTER))


def sane_request_id(value: bytes | None) -> RequestId:
    """The client's X-Request-ID if it is sane, else a fresh one."""
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return RequestId(value)
    return new_request_id()


# The scope key under which Gatehouse's uvicorn protocol (``app.serving.targets``) keeps a
# request target that is not origin-form (``http://host/path``, ``host:port``, ``*``): uvicorn
# itself keeps only the path and query of it.
REQUEST_TARGET_KEY = "gatehouse.request_target"
