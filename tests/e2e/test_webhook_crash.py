"""Crash tests: real ``gatehouse serve`` processes, SIGKILLed while they hold acknowledged webhooks.

Nothing acknowledged may be lost: every event answered 202 is delivered after
a restart (SQLite) or by the surviving replica (two processes sharing
Postgres), and no attempt of a delivery is made twice at once (each
``(delivery id, attempt number)`` reaches the target at most once).
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from app.webhooks.store import DeliveryStore
from tests.conftest import POSTGRES_URL
from tests.e2e.test_cli import HEALTHZ, free_port, gatehouse, process, wait_until_ok
from tests.servers import run_uvicorn
from tests.webhooks import RecordingTarget, json_body, standard_headers

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EVENTS = 500
SENDERS = 25  # webhooks in flight at once, as a provider's burst
DELIVERY_TIMEOUT = 60.0


def webhook_config(tmp_path: Path, name: str, store: str, target_port: int) -> Path:
    config = {
        "log_level": "warning",
        "webhook_store": store,
        "webhook_dispatch_interval": 0.2,
        "webhook_dispatch_batch": 100,
        "webhook_dispatch_concurrency": 50,
        "webhook_lease_seconds": 3,  # a killed holder's deliveries are free again after 3 s
        "webhooks": [
            {
                "name": "crash",
                "path": "/hooks/crash",
                "verify": {"scheme": "standard", "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]},
                # The breaker off: every webhook's failed attempt is made, and must survive the kill.
                "deliver_to": [
                    {"name": "svc", "url": f"http://127.0.0.1:{target_port}/in", "timeout": 2, "circuit_breaker": False}
                ],
                # Slow enough that a down target costs few attempts, long enough never to dead-letter here.
                "retry": {"schedule": [1.0] * 100, "jitter": 0.1},
            }
        ],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextlib.contextmanager
def serve(tmp_path: Path, config: Path, name: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    log = tmp_path / f"{name}.log"
    argv = gatehouse("serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port))
    with process(argv, log, tmp_path) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until_ok(url + HEALTHZ, proc, log)
        yield url, proc


async def send_webhooks(urls: list[str], count: int, *, on_sent: Any = None) -> dict[str, int]:
    """POST ``count`` signed webhooks spread over ``urls``; a sender that fails moves on to the next
    URL and retries the same webhook id, as a provider does. Returns provider id -> event id."""
    acked: dict[str, int] = {}
    ids = iter(range(count))

    async def sender(client: httpx.AsyncClient, offset: int) -> None:
        for n in ids:
            msg_id = f"msg_{n:04d}"
            body = json_body({"n": n, "padding": "x" * 200})
            for turn in range(len(urls) * 3):
                url = urls[(offset + turn) % len(urls)]
                try:
                    response = await client.post(
                        url + "/hooks/crash", content=body, headers=standard_headers(msg_id, body)
                    )
                except httpx.TransportError:
                    continue
                if response.status_code in (200, 202):
                    acked[msg_id] = response.json()["event_id"]
                    break
            else:
                raise AssertionError(f"{msg_id} was never acknowledged")
            if on_sent is not None:
                await on_sent(len(acked))

    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        async with anyio.create_task_group() as tasks:
            for offset in range(SENDERS):
                tasks.start_soon(sender, client, offset)
    return acked


async def wait_delivered(store: DeliveryStore, expected: int) -> None:
    with anyio.fail_after(DELIVERY_TIMEOUT):
        while True:
            delivered = await store.list_deliveries(status="delivered", limit=expected + 1)
            if len(delivered) >= expected:
                return
            await anyio.sleep(0.2)


def attempts_seen(target: RecordingTarget) -> Counter[tuple[str, str]]:
    return Counter((r.headers["x-gatehouse-delivery-id"], r.headers["x-gatehouse-attempt"]) for r in target.received)


async def test_sqlite_acknowledged_webhooks_survive_sigkill_and_are_all_delivered_after_restart(tmp_path):
    target_port = free_port()
    store_url = f"sqlite:///{tmp_path / 'webhooks.db'}"
    config = webhook_config(tmp_path, "gatehouse", store_url, target_port)

    # The target is down (nothing listens on its port) while the 500 are accepted.
    with serve(tmp_path, config, "first") as (url, proc):
        acked = await send_webhooks([url], EVENTS)
        assert len(acked) == EVENTS
        proc.kill()  # SIGKILL: no shutdown, no lease handed back
        proc.wait(timeout=10)

    with serve(tmp_path, config, "second") as (_url, _proc):
        target = RecordingTarget()
        async with run_uvicorn(target, port=target_port):
            async with await DeliveryStore.open(store_url) as store:
                await wait_delivered(store, EVENTS)
                deliveries = await store.list_deliveries(limit=EVENTS + 1)
    assert len(deliveries) == EVENTS
    assert {d.status for d in deliveries} == {"delivered"}
    seen = attempts_seen(target)
    # The failed attempts made before the kill were committed: most deliveries needed more than one.
    assert sum(d.attempts > 1 for d in deliveries) > EVENTS // 2
    assert max(seen.values()) == 1, "an attempt reached the target twice"
    received_events = Counter(r.headers["x-gatehouse-event-id"] for r in target.received)
    assert set(received_events) == {str(event_id) for event_id in acked.values()}
    # Nothing killed a process while the target was up: each event arrived exactly once.
    assert set(received_events.values()) == {1}


async def test_sqlite_sigkill_mid_group_commit_acknowledged_only_what_committed(tmp_path):
    """Senders keep 25 webhooks in flight, so the writer is always inside a group commit when
    the process is SIGKILLed. Every webhook answered 2xx must be in the store and delivered after
    a restart; webhooks whose request died with the process may or may not have committed."""
    target_port = free_port()
    store_url = f"sqlite:///{tmp_path / 'webhooks.db'}"
    config = webhook_config(tmp_path, "gatehouse", store_url, target_port)
    acked: dict[str, int] = {}
    cut_off: set[str] = set()
    ids = iter(range(EVENTS * 4))

    with serve(tmp_path, config, "first") as (url, proc):

        async def sender(client: httpx.AsyncClient) -> None:
            for n in ids:
                msg_id = f"msg_{n:04d}"
                body = json_body({"n": n, "padding": "x" * 200})
                try:
                    response = await client.post(
                        url + "/hooks/crash", content=body, headers=standard_headers(msg_id, body)
                    )
                except httpx.TransportError:
                    cut_off.add(msg_id)  # in flight when the process died
                    return
                assert response.status_code == 202, response.text
                acked[msg_id] = response.json()["event_id"]
                if len(acked) >= EVENTS // 2 and proc.poll() is None:
                    proc.kill()  # SIGKILL while the other senders' webhooks are being committed

        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
            async with anyio.create_task_group() as tasks:
                for _ in range(SENDERS):
                    tasks.start_soon(sender, client)
        proc.wait(timeout=10)
    assert cut_off, "no webhook was in flight at the kill"

    with serve(tmp_path, config, "second") as (_url, _proc):
        target = RecordingTarget()
        async with run_uvicorn(target, port=target_port):
            async with await DeliveryStore.open(store_url) as store:
                events = await store.list_events(limit=EVENTS * 4)
                await wait_delivered(store, len(events))
                deliveries = await store.list_deliveries(limit=EVENTS * 4)
    committed = {e.provider_event_id: e.id for e in events}
    # Nothing acknowledged was lost: each 2xx named an event that is in the store...
    assert acked.items() <= committed.items()
    # ... and nothing else was committed but the webhooks cut off in flight.
    assert set(committed) - set(acked) <= cut_off
    assert {d.status for d in deliveries} == {"delivered"} and len(deliveries) == len(events)
    received = {r.headers["x-gatehouse-provider-event-id"] for r in target.received}
    assert set(acked) <= received
    assert max(attempts_seen(target).values()) == 1, "an attempt reached the target twice"


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A database of its own for one test, dropped afterwards (two servers migrate it)."""
    base = make_url(POSTGRES_URL)
    name = f"gatehouse_crash_{uuid.uuid4().hex[:12]}"
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_two_processes_sharing_postgres_deliver_everything_when_one_is_sigkilled_mid_run(tmp_path, postgres_url):
    del postgres_url  # the fixture makes sure PostgreSQL is up
    target_port = free_port()
    release = anyio.Event()

    slow = RecordingTarget(delay=0.05)  # so the killed process has requests in flight
    async with fresh_postgres_database() as store_url, run_uvicorn(slow, port=target_port):
        config = webhook_config(tmp_path, "gatehouse", store_url, target_port)
        with serve(tmp_path, config, "a") as (url_a, proc_a), serve(tmp_path, config, "b") as (url_b, _proc_b):

            async def kill_a_midway(sent: int) -> None:
                if sent >= EVENTS // 2 and proc_a.poll() is None:
                    proc_a.kill()  # mid-intake and mid-delivery: A holds leases and in-flight requests
                    release.set()

            acked = await send_webhooks([url_a, url_b], EVENTS, on_sent=kill_a_midway)
            assert release.is_set()
            assert len(acked) == EVENTS
            async with await DeliveryStore.open(store_url) as store:
                await wait_delivered(store, EVENTS)
                deliveries = await store.list_deliveries(limit=EVENTS + 1)
    assert len(deliveries) == EVENTS
    assert {d.status for d in deliveries} == {"delivered"}
    seen = attempts_seen(slow)
    assert max(seen.values()) == 1, "an attempt reached the target twice"
    # A's leases were taken over: deliveries it had claimed were attempted again by B (attempt 2).
    assert any(attempt != "1" for _, attempt in seen), "no delivery held by the killed process was taken over"
    received_events = {r.headers["x-gatehouse-event-id"] for r in slow.received}
    assert received_events == {str(event_id) for event_id in acked.values()}
