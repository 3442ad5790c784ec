"""A bounded loopback load test: one of three targets is killed halfway.

Eight clients send GETs for ``DURATION`` seconds through Gatehouse to three
upstream processes; at half time one upstream gets SIGKILL. Without retries,
the requests that hit the dead target fail until passive health ejects it;
after that the error rate must be 0 for the rest of the run (inside the
ejection window). The figures are written to stdout (``pytest -s`` shows them).
"""

from __future__ import annotations

import sys
import time

import anyio
import httpx
import pytest

from tests.gateway import route, run_gateway
from tests.processes import upstream_process

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DURATION = 6.0
CLIENTS = 8
EJECTION = 10.0  # longer than the run's second half: the dead target stays out


async def test_killing_one_of_three_targets_errors_stop_once_it_is_ejected():
    async with upstream_process() as a, upstream_process() as b, upstream_process() as c:
        health = {"max_failures": 3, "window": 5, "ejection": EJECTION}
        async with run_gateway(route("load", "/load", [a.url, b.url, c.url], passive_health=health)) as gw:
            results: list[tuple[float, bool]] = []  # (seconds from start to completion, ok)
            limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
            async with httpx.AsyncClient(limits=limits, timeout=5) as client:
                start = time.monotonic()

                async def worker() -> None:
                    while time.monotonic() - start < DURATION:
                        try:
                            ok = (await client.get(f"{gw.url}/load/echo")).status_code == 200
                        except httpx.HTTPError:
                            ok = False
                        # By completion: a request cut off by the kill counts after it.
                        results.append((time.monotonic() - start, ok))

                async with anyio.create_task_group() as tg:
                    for _ in range(CLIENTS):
                        tg.start_soon(worker)
                    await anyio.sleep(DURATION / 2)
                    c.kill()
                    killed_at = time.monotonic() - start
            state = gw.upstreams()["load"]["targets"]
            await anyio.sleep(0.2)
            assert gw.connections_in_use() == 0

    before = [ok for t, ok in results if t < killed_at]
    after = [(t, ok) for t, ok in results if t >= killed_at]
    errors_after = [t for t, ok in after if not ok]
    last_error = max(errors_after, default=killed_at) - killed_at
    settled = [ok for t, ok in after if t >= killed_at + 1.0]
    figures = (
        f"\nload test: {len(results)} requests in {DURATION}s ({len(results) / DURATION:.0f}/s), {CLIENTS} clients\n"
        f"  before kill: {len(before)} requests, {before.count(False)} errors\n"
        f"  after kill:  {len(after)} requests, {len(errors_after)} errors, last error {last_error * 1000:.0f} ms "
        f"after the kill; {len(settled)} requests from +1 s on, {settled.count(False)} errors\n"
        f"  killed target: {state[2]['state']}, ejected for {state[2]['ejected_for']}s more\n"
    )
    sys.stdout.write(figures)
    assert before.count(False) == 0
    assert len(before) > 50 and len(settled) > 50  # it really was under load
    assert state[2]["state"] == "ejected" and [s["state"] for s in state[:2]] == ["healthy", "healthy"]
    assert 1 <= len(errors_after) <= CLIENTS + health["max_failures"]
    assert last_error < 1.0  # ejected well within the ejection window
    assert settled.count(False) == 0
