"""Retry delays: full-jitter exponential backoff (pure). ``Retry-After`` is parsed in ``app.wire``."""

from __future__ import annotations

import random
from collections.abc import Callable


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
