"""Per-target control with real processes: a ``gatehouse serve`` delivering to real targets.

A slow target beside a fast one must not hold up the fast one's deliveries
(fairness); ``max_in_flight`` bounds a target's concurrent attempts and
``rate_limit`` its pace; a failing target's breaker stops the attempts and
spends no retries until it recovers; ``event_types`` fans one endpoint out
selectively.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
import yaml

from tests.e2e.test_webhook_crash import serve
from tests.servers import run_uvicorn
from tests.webhooks import SECRET, CountingTarget, RecordingTarget, json_body, standard_headers

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def config(tmp_path: Path, targets: list[dict[str, Any]], retry: dict[str, Any] | None = None, **settings: Any) -> Path:
    body = {
        "log_level": "warning",
        "webhook_store": f"sqlite:///{tmp_path / 'webhooks.db'}",
        "webhook_dispatch_interval": 0.1,
        "webhooks": [
            {
                "name": "paced",
                "path": "/hooks/paced",
                "verify": {"scheme": "standard", "secrets": [SECRET]},
                "deliver_to": targets,
                "retry": retry or {"schedule": [1.0] * 10, "jitter": 0.1},
            }
        ],
        **settings,
    }
    path = tmp_path / "gatehouse.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


async def send(url: str, count: int) -> float:
    """POST ``count`` webhooks from 10 senders; returns when the last was acknowledged."""
    ids = iter(range(count))

    async def sender(client: httpx.AsyncClient) -> None:
        for n in ids:
            body = json_body({"n": n, "type": "invoice.paid"})
            response = await client.post(url + "/hooks/paced", content=body, headers=standard_headers(f"m{n}", body))
            assert response.status_code == 202

    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        async with anyio.create_task_group() as tasks:
            for _ in range(10):
                tasks.start_soon(sender, client)
    return time.monotonic()


async def test_a_slow_target_does_not_hold_up_a_fast_one(tmp_path):
    events = 60
    slow, fast = CountingTarget(delay=2.0), CountingTarget()
    async with run_uvicorn(slow) as slow_svc, run_uvicorn(fast) as fast_svc:
        targets = [
            {"name": "slow", "url": slow_svc.url, "timeout": 5},
            {"name": "fast", "url": fast_svc.url, "timeout": 5},
        ]
        path = config(tmp_path, targets, webhook_dispatch_concurrency=8)
        with serve(tmp_path, path, "gatehouse") as (url, _proc):
            started = time.monotonic()
            await send(url, events)
            await fast.wait_for(events, timeout=30)
            fast_done = time.monotonic() - started
            slow_received = len(slow.received)
    # The slow target takes 2 s an attempt and may hold half the 8 slots: while the fast target got
    # all 60, it can have finished only a few. Without per-target caps the slow one fills every
    # slot and the fast one moves at the slow one's pace (60 x 2 s / 8 slots = 15 s).
    assert fast_done < 10.0, f"the fast target waited {fast_done:.1f}s behind the slow one"
    assert slow.peak <= 4
    assert slow_received < events


async def test_max_in_flight_and_rate_limit_pace_a_target(tmp_path):
    capped, limited = CountingTarget(delay=0.3), CountingTarget()
    async with run_uvicorn(capped) as capped_svc, run_uvicorn(limited) as limited_svc:
        targets = [
            {"name": "capped", "url": capped_svc.url, "max_in_flight": 2},
            {"name": "limited", "url": limited_svc.url, "rate_limit": "5/second"},
        ]
        with serve(tmp_path, config(tmp_path, targets), "gatehouse") as (url, _proc):
            await send(url, 15)
            await capped.wait_for(15, timeout=30)
            await limited.wait_for(15, timeout=30)
    assert capped.peak == 2
    arrivals = sorted(r.at for r in limited.received)
    # At most 5 begin in any second: the 15th no sooner than ~2 s after the first.
    assert arrivals[-1] - arrivals[0] >= 1.8
    for i, first in enumerate(arrivals):
        assert len([t for t in arrivals[i:] if t - first < 0.95]) <= 5  # 0.05 s for the trip to the target


async def test_event_types_fan_one_endpoint_out_by_the_providers_event_type(tmp_path):
    payments, refunds, everything = RecordingTarget(), RecordingTarget(), RecordingTarget()
    async with run_uvicorn(payments) as p_svc, run_uvicorn(refunds) as r_svc, run_uvicorn(everything) as e_svc:
        targets = [
            {"name": "payments", "url": p_svc.url, "event_types": ["invoice.paid", "charge.succeeded"]},
            {"name": "refunds", "url": r_svc.url, "event_types": ["charge.refund.*"]},
            {"name": "everything", "url": e_svc.url},
        ]
        with serve(tmp_path, config(tmp_path, targets), "gatehouse") as (url, _proc):
            kinds = ["invoice.paid", "charge.refund.updated", "customer.created", None, "charge.succeeded"]
            async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
                for n, kind in enumerate(kinds):
                    body = json_body({"n": n, "type": kind} if kind else {"n": n})
                    response = await client.post(
                        url + "/hooks/paced", content=body, headers=standard_headers(f"t{n}", body)
                    )
                    assert response.status_code == 202
            await everything.wait_for(5)
            await payments.wait_for(2)
            await refunds.wait_for(1)
            await anyio.sleep(0.5)  # nothing else arrives

    def seen(target: RecordingTarget) -> list[int]:
        return sorted(orjson.loads(r.body)["n"] for r in target.received)

    assert seen(payments) == [0, 4]
    assert seen(refunds) == [1]
    assert seen(everything) == [0, 1, 2, 3, 4]


async def test_a_failing_targets_breaker_stops_attempts_spends_no_retries_and_closes_when_it_recovers(tmp_path):
    events = 20
    healthy = False
    flaky = RecordingTarget(respond=lambda _r: (204, []) if healthy else (503, []))
    steady = RecordingTarget()
    async with run_uvicorn(flaky) as flaky_svc, run_uvicorn(steady) as steady_svc:
        breaker = {"failure_threshold": 3, "reset_timeout": 1.0}
        targets = [
            {"name": "flaky", "url": flaky_svc.url, "max_in_flight": 1, "circuit_breaker": breaker},
            {"name": "steady", "url": steady_svc.url},
        ]
        # One retry: without the breaker, every event would be dead after two 503s (40 requests).
        path = config(tmp_path, targets, retry={"schedule": [0.1], "jitter": 0})
        with serve(tmp_path, path, "gatehouse") as (url, _proc):
            await send(url, events)
            await steady.wait_for(events)  # the failing target holds up no one
            failing_since = time.monotonic()
            await anyio.sleep(2.5)
            failed = len(flaky.received)
            failing_for = time.monotonic() - failing_since
            healthy = True
            await flaky.wait_for(failed + events, timeout=20)
            await anyio.sleep(0.5)  # nothing more arrives
            after = flaky.received[failed:]
    # Three failures open it; after that one trial per reset_timeout (each fails and reopens it).
    assert 3 <= failed <= 3 + int(failing_for / 1.0) + 2
    # Once a trial succeeds, every event is delivered exactly once: none spent its one retry and died.
    delivered = sorted(orjson.loads(r.body)["n"] for r in after)
    assert delivered == list(range(events))
