"""The dispatcher's slots and leases under saturation, through a real Gatehouse and real slow targets.

A delivery leased to this process must hold an attempt slot from the moment its
lease begins: one that waits for a slot can outlive its lease, and then a poller
(this process's or a replica's) claims it again and the target gets it twice.
"""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest

from tests.gateway import run_gateway
from tests.servers import LOOPBACK, run_uvicorn
from tests.webhooks import SECRET, CountingTarget, Received, json_body, standard_headers

pytestmark = pytest.mark.anyio

SLOTS = 8
DELAY = 0.8  # each attempt takes this long at the target: a round of attempts
LEASE = 1.15  # outlasts an attempt (timeout 1.0), not a round of waiting for a slot and then one


def hook(name: str, url: str, targets: int, max_in_flight: int) -> dict[str, object]:
    return {
        "name": name,
        "path": f"/hooks/{name}",
        "verify": {"scheme": "standard", "secrets": [SECRET]},
        "deliver_to": [
            {"name": f"t{n}", "url": url, "timeout": 1.0, "max_in_flight": max_in_flight} for n in range(targets)
        ],
    }


def request(name: str, msg_id: str) -> bytes:
    body = json_body({"msg": msg_id})
    headers = {**standard_headers(msg_id, body), "host": "gatehouse", "content-length": str(len(body))}
    head = f"POST /hooks/{name} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"connection: close\r\n\r\n" + body


async def test_a_delivery_leased_at_intake_is_sent_once_though_the_slots_are_taken(tmp_path: Path):
    # "fanout" has more targets than the dispatcher has slots, so its event is never leased at intake:
    # its deliveries are claimed one by one as they get a slot. "single" arrives right behind it, while
    # all the slots are still free, and is leased at intake. If the lease did not come with a slot, the
    # fanout's deliveries would take every slot first and the single delivery would wait a whole round
    # (DELAY) for one: its lease would run out mid-attempt and the poller would send it again.
    fanout_target, single_target = CountingTarget(delay=DELAY), CountingTarget(delay=DELAY)
    async with run_uvicorn(fanout_target) as fanout_svc, run_uvicorn(single_target) as single_svc:
        async with run_gateway(
            webhooks=[hook("fanout", fanout_svc.url, SLOTS + 1, 1), hook("single", single_svc.url, 1, 2)],
            webhook_store=f"sqlite:///{tmp_path / 'webhooks.db'}",
            webhook_dispatch_interval=0.2,
            webhook_dispatch_concurrency=SLOTS,
            webhook_lease_seconds=LEASE,
        ) as gw:
            # Both connections open first, then both requests written in one step of the loop (plain
            # sockets: an await between them would let the gateway run), so the gateway reads them in the
            # same turn, fanout's first: "single" is leased while fanout's event is being stored.
            with (
                socket.create_connection((LOOPBACK, gw.port)) as fanout,
                socket.create_connection((LOOPBACK, gw.port)) as single,
            ):
                await anyio.sleep(0.1)  # both accepted
                fanout.sendall(request("fanout", "m_fanout"))
                single.sendall(request("single", "m_single"))
                for sock in (fanout, single):
                    sock.settimeout(5)
                    assert (await anyio.to_thread.run_sync(sock.recv, 4096)).startswith(b"HTTP/1.1 202")
            webhooks = gw.state["webhooks"]
            assert webhooks is not None
            with anyio.fail_after(10):  # two rounds of attempts
                while True:
                    deliveries = await webhooks.store.list_deliveries(limit=100)
                    if len(deliveries) == SLOTS + 2 and all(d.status == "delivered" for d in deliveries):
                        break
                    await anyio.sleep(0.05)
            await anyio.sleep(DELAY + 0.2)  # a second send of any of them would have arrived by now
    received = fanout_target.received + single_target.received
    sent = Counter(r.headers["x-gatehouse-delivery-id"] for r in received)
    assert {delivery_id: n for delivery_id, n in sent.items() if n > 1} == {}, "a delivery was sent twice"
    assert sorted(sent) == sorted(str(d.id) for d in deliveries)
    assert [d.attempts for d in deliveries] == [1] * (SLOTS + 2)  # no claim beyond the first
    assert fanout_target.peak <= SLOTS and single_target.peak == 1


async def test_a_burst_at_a_capped_target_is_sent_once_each_never_beyond_max_in_flight(tmp_path: Path):
    # Twice as many slots as the target may use, a lease of about two attempts, and a burst of
    # webhooks: some leased at intake, some claimed after intake, the rest left to the poller, and
    # those beyond the cap handed back by the target's gate. Each must arrive once, two at a time.
    events, delay = 24, 0.3
    target = CountingTarget(delay=delay)
    async with run_uvicorn(target) as svc:
        capped = {**hook("capped", svc.url, 1, 2), "retry": {"schedule": [0.05] * 5}}
        capped["deliver_to"][0]["timeout"] = 0.6
        async with run_gateway(
            webhooks=[capped],
            webhook_store=f"sqlite:///{tmp_path / 'webhooks.db'}",
            webhook_dispatch_interval=0.05,
            webhook_dispatch_concurrency=4,
            webhook_lease_seconds=0.7,
        ) as gw:
            async with httpx.AsyncClient(base_url=gw.url, timeout=10.0) as client:

                async def post(n: int) -> None:
                    body = json_body({"n": n})
                    response = await client.post("/hooks/capped", content=body, headers=standard_headers(f"m{n}", body))
                    assert response.status_code == 202

                async with anyio.create_task_group() as tasks:
                    for n in range(events):
                        tasks.start_soon(post, n)
            webhooks = gw.state["webhooks"]
            assert webhooks is not None
            with anyio.fail_after(12):  # 24 x 0.3 s, two at a time: ~3.6 s
                while True:
                    deliveries = await webhooks.store.list_deliveries(limit=100)
                    if len(deliveries) == events and all(d.status == "delivered" for d in deliveries):
                        break
                    await anyio.sleep(0.05)
            await anyio.sleep(delay + 0.2)  # a second send of any of them would have arrived by now
    sent = Counter(r.headers["x-gatehouse-delivery-id"] for r in target.received)
    assert {delivery_id: n for delivery_id, n in sent.items() if n > 1} == {}, "a delivery was sent twice"
    assert sorted(sent) == sorted(str(d.id) for d in deliveries)
    assert [d.attempts for d in deliveries] == [1] * events
    assert target.peak == 2


async def test_intake_leaves_a_busy_targets_deliveries_to_the_poller_with_no_claim_or_hand_back(tmp_path: Path):
    # The target may take one attempt at a time and is holding one: the next webhooks' deliveries cannot
    # begin, so intake neither leases them (an attempt would be refused by the gate and the delivery
    # written back) nor claims them: each costs its intake's write and nothing more. They go once it frees.
    events = 10
    release = anyio.Event()

    async def hold_the_first(_record: Received) -> None:
        if not release.is_set():
            await release.wait()

    target = CountingTarget()
    target.before_answer = hold_the_first  # (the target runs in this event loop)
    async with run_uvicorn(target) as svc:
        busy = hook("busy", svc.url, 1, 1)
        busy["deliver_to"][0]["timeout"] = 30  # type: ignore[index]  # held until released, never timed out
        async with run_gateway(
            webhooks=[busy],
            webhook_store=f"sqlite:///{tmp_path / 'webhooks.db'}",
            webhook_dispatch_interval=0.05,
        ) as gw:
            webhooks = gw.state["webhooks"]
            assert webhooks is not None
            async with httpx.AsyncClient(base_url=gw.url, timeout=10.0) as client:

                async def post(n: int) -> None:
                    body = json_body({"n": n})
                    response = await client.post("/hooks/busy", content=body, headers=standard_headers(f"b{n}", body))
                    assert response.status_code == 202

                await post(0)
                await target.wait_for(1)  # its attempt holds the target's one place until released
                written_before = webhooks.writer.commits.items
                for n in range(1, events + 1):
                    await post(n)
                await anyio.sleep(0.1)  # (an attempt refused by the gate would be written back by now)
                written = webhooks.writer.commits.items - written_before
                release.set()
            with anyio.fail_after(10):
                while True:
                    deliveries = await webhooks.store.list_deliveries(limit=100)
                    if len(deliveries) == events + 1 and all(d.status == "delivered" for d in deliveries):
                        break
                    await anyio.sleep(0.05)
    assert written == events  # the intakes, and no claim or hand-back
    assert sorted(Counter(r.headers["x-gatehouse-delivery-id"] for r in target.received).values()) == [1] * (events + 1)
    assert [d.attempts for d in deliveries] == [1] * (events + 1)


async def test_a_backlog_for_a_capped_target_is_claimed_in_batches_its_gate_can_take(tmp_path: Path):
    # Sixteen slots, a target that takes four attempts at a time, and a backlog of 40 deliveries left
    # pending while the target was busy. The poller claims no more than the target's gate can take:
    # nothing is claimed only to be refused by the gate and written back (a claim and a write for
    # nothing), and it claims again once half the target's cap is free, not at every attempt's end.
    events, cap = 40, 4
    release = anyio.Event()

    async def hold_the_first(_record: Received) -> None:
        if not release.is_set():
            await release.wait()

    target = CountingTarget(delay=0.02)
    target.before_answer = hold_the_first  # (the target runs in this event loop)
    async with run_uvicorn(target) as svc:
        capped = hook("capped", svc.url, 1, cap)
        capped["deliver_to"][0]["timeout"] = 30  # type: ignore[index]  # held until released, never timed out
        async with run_gateway(
            webhooks=[capped],
            webhook_store=f"sqlite:///{tmp_path / 'webhooks.db'}",
            webhook_dispatch_interval=0.05,
            webhook_dispatch_concurrency=16,
        ) as gw:
            webhooks = gw.state["webhooks"]
            assert webhooks is not None
            claims: list[int] = []
            claim_due = webhooks.store.claim_due

            async def counting_claim_due(*args, **kwargs):  # type: ignore[no-untyped-def]
                claimed = await claim_due(*args, **kwargs)
                if claimed:
                    claims.append(len(claimed))
                return claimed

            webhooks.store.claim_due = counting_claim_due  # type: ignore[method-assign]
            async with httpx.AsyncClient(base_url=gw.url, timeout=10.0) as client:

                async def post(n: int) -> None:
                    body = json_body({"n": n})
                    response = await client.post("/hooks/capped", content=body, headers=standard_headers(f"c{n}", body))
                    assert response.status_code == 202

                for n in range(cap):  # these hold all of the target's places until released
                    await post(n)
                await target.wait_for(cap)
                for n in range(cap, cap + events):  # the backlog: left pending for the poller
                    await post(n)
                written_before = webhooks.writer.commits.items
                release.set()
                with anyio.fail_after(10):
                    while True:
                        deliveries = await webhooks.store.list_deliveries(limit=100)
                        if len(deliveries) == cap + events and all(d.status == "delivered" for d in deliveries):
                            break
                        await anyio.sleep(0.05)
                written = webhooks.writer.commits.items - written_before
    assert written == cap + events  # one outcome each: no delivery claimed only to be handed back
    assert sum(claims) == events and max(claims) <= cap
    assert len(claims) <= events // (cap // 2) + 2, claims  # batches of half the cap, not one by one
    assert target.peak == cap
    assert sorted(Counter(r.headers["x-gatehouse-delivery-id"] for r in target.received).values()) == [1] * (
        cap + events
    )
