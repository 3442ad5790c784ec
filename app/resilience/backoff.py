"""Retry delays: full-jitter exponential backoff and ``Retry-After`` (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def full_jitter(
    retry: int, base: float, cap: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first retry).

    "Full jitter" (AWS architecture blog, 2015): uniform over
    ``[0, min(cap, base * 2**(retry - 1))]``, so clients that failed together
    do not retry together.
    """
    ceiling = min(cap, base * 2 ** (retry - 1))
    return uniform(0.0, ceiling)


def parse_retry_after(value: bytes | str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks for (delta-seconds or HTTP-date), or None if unusable."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
