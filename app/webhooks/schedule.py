"""Retry policy for webhook deliveries. Pure: no I/O, no clock of its own.

After each attempt the dispatcher asks ``classify`` what happens next:

* 2xx                     → ``Delivered``
* 410 Gone                → ``Dead`` (the target says never again)
* 429 / 503 + Retry-After → ``Retry`` after the server's delay, at least
  ``MIN_RETRY_AFTER`` and at most the policy's ``retry_after_cap``
* anything else, including no response at all (timeout, refused, reset)
                          → ``Retry`` after the next step of the schedule, ±jitter

Every attempt counts against the schedule, whichever rule set the delay, so a
delivery makes at most ``policy.max_attempts`` attempts and is then ``Dead``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from app.config.webhooks import RetryPolicy
from app.wire import parse_retry_after

MIN_RETRY_AFTER = 1.0
_SYSTEM_RANDOM = random.Random()


@dataclass(frozen=True)
class Delivered:
    pass


@dataclass(frozen=True)
class Retry:
    delay: float
    reason: str


@dataclass(frozen=True)
class Dead:
    reason: str


Outcome = Delivered | Retry | Dead


def backoff_delay(policy: RetryPolicy, attempts: int, *, rng: random.Random = _SYSTEM_RANDOM) -> float | None:
    """Seconds to wait after ``attempts`` failed attempts, with ±jitter; None once the schedule is spent."""
    if attempts < 1:
        raise ValueError("attempts counts the attempts made, so it starts at 1")
    if attempts > len(policy.schedule):
        return None
    base = policy.schedule[attempts - 1]
    return max(0.0, base * (1.0 + rng.uniform(-policy.jitter, policy.jitter)))


def classify(
    policy: RetryPolicy,
    attempts: int,
    *,
    status: int | None,
    retry_after: str | None = None,
    error: str | None = None,
    now: float,
    rng: random.Random = _SYSTEM_RANDOM,
) -> Outcome:
    """What follows attempt number ``attempts`` that got ``status`` (None: no response, see ``error``)."""
    if status is not None and 200 <= status < 300:
        return Delivered()
    if status == 410:
        return Dead("HTTP 410 Gone")
    reason = f"HTTP {status}" if status is not None else (error or "no response")
    delay = backoff_delay(policy, attempts, rng=rng)
    if delay is None:
        return Dead(f"gave up after attempt {attempts}: {reason}")
    if status in (429, 503):
        asked = parse_retry_after(retry_after, now=now, cap=policy.retry_after_cap)
        if asked is not None:
            delay = min(max(asked, MIN_RETRY_AFTER), policy.retry_after_cap)
            return Retry(delay, f"{reason}, Retry-After {retry_after}")
    return Retry(delay, reason)
