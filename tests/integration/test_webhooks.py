"""Webhook intake and delivery through a real Gatehouse on uvicorn, with a real SQLite store and target."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from app.webhooks.records import Attempt, Delivery
from app.webhooks.store import DeliveryStore
from tests.gateway import RunningGateway, route, run_gateway
from tests.servers import raw_http, run_uvicorn
from tests.webhooks import ADMIN_TOKEN, RecordingTarget, endpoint, json_body, standard_headers

pytestmark = pytest.mark.anyio

FAST = {"webhook_dispatch_interval": 0.05, "admin_token": ADMIN_TOKEN}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'webhooks.db'}"


async def wait_status(gw: RunningGateway, delivery_id: int, status: str, *, timeout: float = 10.0) -> Delivery:
    webhooks = gw.state["webhooks"]
    assert webhooks is not None
    with anyio.fail_after(timeout):
        while True:
            found = await webhooks.store.get_delivery_with_attempts(delivery_id)
            if found is not None and found[0].status == status:
                return found[0]
            await anyio.sleep(0.02)


async def post_signed(client: httpx.AsyncClient, url: str, msg_id: str, payload: Any) -> httpx.Response:
    body = json_body(payload)
    return await client.post(url, content=body, headers=standard_headers(msg_id, body))


async def first_delivery_id(gw: RunningGateway, event_id: int) -> int:
    webhooks = gw.state["webhooks"]
    assert webhooks is not None
    found = [d for d in await webhooks.store.list_deliveries(limit=1000) if d.event_id == event_id]
    assert len(found) == 1
    return found[0].id


async def first_attempt(gw: RunningGateway, delivery_id: int) -> tuple[Delivery, list[Attempt]]:
    """The delivery and its attempts once it has one (within 5 s)."""
    webhooks = gw.state["webhooks"]
    assert webhooks is not None
    with anyio.fail_after(5):
        while (found := await webhooks.store.get_delivery_with_attempts(delivery_id)) is None or not found[1]:
            await anyio.sleep(0.02)
    return found


async def test_signed_webhook_is_acknowledged_202_then_delivered_with_the_event_ids(tmp_path):
    target = RecordingTarget()
    async with run_uvicorn(target) as svc:
        hook = endpoint("github-ish", "/hooks/in", svc.url + "/receive")
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                response = await post_signed(client, "/hooks/in", "msg_1", {"hello": "world"})
                assert response.status_code == 202
                event_id = response.json()["event_id"]
                await target.wait_for(1)
                got = target.received[0]
                assert got.body == json_body({"hello": "world"})
                assert got.headers["x-gatehouse-event-id"] == str(event_id)
                assert got.headers["x-gatehouse-provider-event-id"] == "msg_1"
                assert got.headers["x-gatehouse-attempt"] == "1"
                assert "webhook-signature" not in got.headers  # the provider's signature is not passed on
                assert got.headers["content-type"] == "application/json"
                delivery = await wait_status(gw, await first_delivery_id(gw, event_id), "delivered")
                assert delivery.last_status == 204


async def test_repeat_of_a_provider_event_id_answers_200_and_is_delivered_once(tmp_path):
    target = RecordingTarget()
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url)
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                first = await post_signed(client, "/hooks/in", "msg_dup", {"n": 1})
                again = await post_signed(client, "/hooks/in", "msg_dup", {"n": 1})
                assert (first.status_code, again.status_code) == (202, 200)
                assert again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
                await target.wait_for(1)
                await anyio.sleep(0.3)  # several dispatcher polls
                assert len(target.received) == 1


@pytest.mark.parametrize(
    ("tamper", "check"),
    [
        ("body", "bad-signature"),
        ("secret", "bad-signature"),
        ("stale", "stale-timestamp"),
        ("future", "future-timestamp"),
        ("missing", "missing-header"),
    ],
)
async def test_unverifiable_webhook_answers_401_naming_the_check_and_stores_nothing(tmp_path, tamper, check):
    hook = endpoint("std", "/hooks/in", "http://127.0.0.1:9/unused")
    async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
        body = json_body({"n": 1})
        now = int(time.time())
        headers = standard_headers(
            "msg_x",
            body,
            secret="whsec_" + "QUJDREVGR0hJSktMTU5PUA=="
            if tamper == "secret"
            else "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            timestamp={"stale": now - 3600, "future": now + 3600}.get(tamper, now),
        )
        if tamper == "body":
            body = json_body({"n": 2})
        if tamper == "missing":
            del headers["webhook-signature"]
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.post("/hooks/in", content=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert check in problem["detail"]
        assert "whsec_" not in response.text and "MfKQ9r8" not in response.text
        webhooks = gw.state["webhooks"]
        assert webhooks is not None
        assert await webhooks.store.list_events() == []


async def test_body_over_the_limit_answers_413_before_the_body_is_sent(tmp_path):
    hook = endpoint("std", "/hooks/in", "http://127.0.0.1:9/unused", max_body_bytes=1000)
    async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
        # Declares 10 MB but sends only the head: the answer must come without the body.
        head = (
            b"POST /hooks/in HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n"
        )
        started = time.monotonic()
        reply = await raw_http("127.0.0.1", gw.port, head, timeout=3.0)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert time.monotonic() - started < 2.0
        # A chunked body (no length) is refused as soon as it passes the limit, before its last chunk.
        chunk = b"1f4\r\n" + b"x" * 500 + b"\r\n"
        head = b"POST /hooks/in HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        reply = await raw_http("127.0.0.1", gw.port, head + chunk * 3, timeout=3.0)  # no terminating 0-chunk
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


async def test_store_failure_answers_503_with_retry_after_never_a_4xx(tmp_path):
    hook = endpoint("std", "/hooks/in", "http://127.0.0.1:9/unused")
    async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:

        def drop_events_table() -> None:
            # In a thread: the store's open transactions need the event loop to finish.
            with sqlite3.connect(tmp_path / "webhooks.db", timeout=5) as db:
                db.execute("ALTER TABLE webhook_events RENAME TO webhook_events_gone")

        await anyio.to_thread.run_sync(drop_events_table)  # the table goes away under the running store
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await post_signed(client, "/hooks/in", "msg_503", {"n": 1})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.headers["content-type"] == "application/problem+json"


async def test_webhook_paths_take_post_only_and_other_paths_still_reach_the_proxy(tmp_path, upstream):
    server, _stats = upstream
    hook = endpoint("std", "/hooks/in", "http://127.0.0.1:9/unused")
    async with run_gateway(
        route("api", "/api", server.url), webhooks=[hook], webhook_store=store_url(tmp_path), **FAST
    ) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            refused = await client.get("/hooks/in")
            assert refused.status_code == 405
            assert refused.headers["allow"] == "POST"
            assert (await client.get("/api/echo")).status_code == 200
            assert (await client.post("/hooks/in/more")).status_code == 404  # exact paths only


async def test_gone_410_marks_the_delivery_dead_without_retrying(tmp_path):
    target = RecordingTarget(respond=lambda _r: (410, []))
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url, retry={"schedule": [0.05, 0.05, 0.05]})
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                response = await post_signed(client, "/hooks/in", "msg_gone", {"n": 1})
            delivery = await wait_status(gw, await first_delivery_id(gw, response.json()["event_id"]), "dead")
            assert delivery.attempts == 1
            assert delivery.last_error == "HTTP 410 Gone"
            await anyio.sleep(0.3)
            assert len(target.received) == 1


async def test_retry_after_on_429_is_honoured_before_the_next_attempt(tmp_path):
    answers = iter([(429, [(b"retry-after", b"1")]), (200, [])])
    target = RecordingTarget(respond=lambda _r: next(answers))
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url, retry={"schedule": [0.01, 0.01], "retry_after_cap": 5})
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                await post_signed(client, "/hooks/in", "msg_429", {"n": 1})
            await target.wait_for(2, timeout=5)
            gap = target.received[1].at - target.received[0].at
            assert 0.95 <= gap < 2.5  # the target's 1 s, not the schedule's 10 ms
            assert target.received[1].headers["x-gatehouse-attempt"] == "2"


async def test_failures_follow_the_schedule_then_dead_letter_and_replay_through_the_ops_api_delivers(tmp_path):
    healthy = False
    target = RecordingTarget(respond=lambda _r: (200, []) if healthy else (500, []))
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url, retry={"schedule": [0.1, 0.2], "jitter": 0})
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as client:
                response = await post_signed(client, "/hooks/in", "msg_dead", {"n": 1})
                delivery_id = await first_delivery_id(gw, response.json()["event_id"])
                await wait_status(gw, delivery_id, "dead")
                assert len(target.received) == 3  # the first attempt and the schedule's two retries
                gaps = [b.at - a.at for a, b in zip(target.received, target.received[1:], strict=False)]
                assert 0.1 <= gaps[0] < 0.6 and 0.2 <= gaps[1] < 0.7

                shown = (await client.get(f"/_gatehouse/webhooks/deliveries/{delivery_id}")).json()
                assert shown["status"] == "dead"
                assert shown["attempts"] == 3
                assert shown["last_error"].startswith("gave up after attempt 3: HTTP 500")
                assert [a["status_code"] for a in shown["attempts_log"]] == [500, 500, 500]
                assert all(a["started_at"].endswith("Z") and a["duration_ms"] >= 0 for a in shown["attempts_log"])
                dead = (await client.get("/_gatehouse/webhooks/deliveries", params={"status": "dead"})).json()
                assert [d["id"] for d in dead["deliveries"]] == [delivery_id]

                healthy = True
                replay = await client.post(f"/_gatehouse/webhooks/deliveries/{delivery_id}/replay")
                assert (replay.status_code, replay.json()) == (202, {"replayed": delivery_id})
                await wait_status(gw, delivery_id, "delivered")
                assert len(target.received) == 4
                assert target.received[3].headers["x-gatehouse-attempt"] == "1"  # a replay starts a fresh schedule


async def test_replay_dead_replays_every_dead_delivery_of_an_endpoint(tmp_path):
    healthy = False
    target = RecordingTarget(respond=lambda _r: (200, []) if healthy else (500, []))
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url, retry={"schedule": []})
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as client:
                ids = []
                for n in range(3):
                    response = await post_signed(client, "/hooks/in", f"msg_{n}", {"n": n})
                    ids.append(await first_delivery_id(gw, response.json()["event_id"]))
                for delivery_id in ids:
                    await wait_status(gw, delivery_id, "dead")
                healthy = True
                replay = await client.post("/_gatehouse/webhooks/endpoints/std/replay-dead")
                assert (replay.status_code, replay.json()) == (202, {"replayed": 3})
                for delivery_id in ids:
                    await wait_status(gw, delivery_id, "delivered")
                unknown = await client.post("/_gatehouse/webhooks/endpoints/nope/replay-dead")
                assert unknown.status_code == 404


async def test_ops_api_lists_events_and_deliveries_in_the_agreed_shapes(tmp_path):
    target = RecordingTarget()
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url)
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url, headers=ADMIN) as client:
                for n in range(3):
                    await post_signed(client, "/hooks/in", f"msg_{n}", {"n": n})
                await target.wait_for(3)
                events = (await client.get("/_gatehouse/webhooks/events", params={"limit": 2})).json()["events"]
                assert [e["provider_event_id"] for e in events] == ["msg_2", "msg_1"]
                assert set(events[0]) == {
                    "id", "endpoint", "provider_event_id", "event_type", "received_at", "deliveries",
                }  # fmt: skip
                assert events[0]["deliveries"] == 1 and events[0]["endpoint"] == "std"
                older = await client.get("/_gatehouse/webhooks/events", params={"before": events[1]["id"]})
                assert [e["provider_event_id"] for e in older.json()["events"]] == ["msg_0"]
                for delivery_id in [d.id for d in await gw.state["webhooks"].store.list_deliveries()]:  # type: ignore[union-attr]
                    await wait_status(gw, delivery_id, "delivered")
                listed = (await client.get("/_gatehouse/webhooks/deliveries", params={"endpoint": "std"})).json()
                assert set(listed["deliveries"][0]) == {
                    "id", "event_id", "endpoint", "target", "provider_event_id", "event_type", "status",
                    "attempts", "next_attempt_at", "last_status", "last_error", "updated_at",
                }  # fmt: skip
                assert {d["status"] for d in listed["deliveries"]} == {"delivered"}
                missing = await client.get("/_gatehouse/webhooks/deliveries/999999")
                assert missing.status_code == 404
                assert missing.headers["content-type"] == "application/problem+json"
                assert (await client.post("/_gatehouse/webhooks/deliveries/999999/replay")).status_code == 404
                bad = await client.get("/_gatehouse/webhooks/deliveries", params={"status": "lost"})
                assert bad.status_code == 422


async def test_delivery_and_event_lists_filter_by_provider_id_type_status_target_and_time(tmp_path):
    down = "http://127.0.0.1:9/down"  # refused: its deliveries go dead at once
    target = RecordingTarget()
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url, retry={"schedule": []})
        hook["deliver_to"].append({"name": "down", "url": down, "event_types": ["invoice.*"]})
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url + "/_gatehouse/webhooks", headers=ADMIN) as client:
                before = time.time()
                for n, kind in enumerate(["invoice.paid", "user.created", "invoice.voided"]):
                    await post_signed(client, gw.url + "/hooks/in", f"msg_{n}", {"n": n, "type": kind})
                await target.wait_for(3)
                for d in await gw.state["webhooks"].store.list_deliveries():  # type: ignore[union-attr]
                    await wait_status(gw, d.id, "delivered" if d.target == "svc" else "dead")

                async def listed(path: str, **params: Any) -> list[dict[str, Any]]:
                    response = await client.get(path, params=params)
                    assert response.status_code == 200, response.text
                    return response.json()[path.strip("/")]

                one = await listed("/deliveries", provider_event_id="msg_0")
                assert {(d["target"], d["provider_event_id"], d["event_type"]) for d in one} == {
                    ("svc", "msg_0", "invoice.paid"),
                    ("down", "msg_0", "invoice.paid"),
                }
                dead = await listed("/deliveries", status="dead")
                assert sorted(d["provider_event_id"] for d in dead) == ["msg_0", "msg_2"]
                assert {d["target"] for d in dead} == {"down"}
                users = await listed("/deliveries", event_type="user.created", target="svc")
                assert [d["provider_event_id"] for d in users] == ["msg_1"]
                assert await listed("/deliveries", target="down", event_type="user.created") == []
                since = datetime.fromtimestamp(before - 60, UTC).isoformat()
                until = datetime.fromtimestamp(before - 30, UTC).isoformat()
                assert len(await listed("/deliveries", since=since)) == 5
                assert await listed("/deliveries", since=since, until=until) == []
                events = await listed("/events", event_type="invoice.voided")
                assert [(e["provider_event_id"], e["deliveries"]) for e in events] == [("msg_2", 2)]
                assert [e["event_type"] for e in await listed("/events", provider_event_id="msg_1")] == ["user.created"]
                # Unknown parameters (events has no status) and zone-less times are refused.
                assert (await client.get("/events", params={"status": "dead"})).status_code == 422
                naive = await client.get("/deliveries", params={"since": "2030-01-01T00:00:00"})
                assert naive.status_code == 422


@pytest.mark.parametrize("value", ["-185714", "2.220446049250313e-16", "2024", "1735689600"])
async def test_a_number_for_since_or_until_is_refused_not_read_as_unix_time(tmp_path, value):
    # Found by schemathesis: ``?since=2024`` was read as 2024 seconds after 1970, so the filter
    # silently matched everything; the parameters take ISO 8601 with a zone, nothing else.
    hook = endpoint("std", "/hooks/in", "http://127.0.0.1:9/unused")
    async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
        async with httpx.AsyncClient(base_url=gw.url + "/_gatehouse/webhooks", headers=ADMIN) as client:
            since = await client.get("/events", params={"since": value})
            until = await client.get("/deliveries", params={"until": value})
            iso = await client.get("/deliveries", params={"since": "2030-01-01T00:00:00Z"})
    assert (since.status_code, until.status_code, iso.status_code) == (422, 422, 200)
    assert since.headers["content-type"] == "application/problem+json"
    assert "ISO 8601" in since.json()["detail"]


async def test_a_misspelt_query_parameter_is_refused_not_silently_ignored(tmp_path):
    # Found by schemathesis: ``?stauts=dead`` listed every delivery, as if no filter had been asked for,
    # and an operator about to replay "the dead ones" would not know.
    hook = endpoint("std", "/hooks/in", "http://127.0.0.1:9/unused")
    async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
        async with httpx.AsyncClient(base_url=gw.url + "/_gatehouse/webhooks", headers=ADMIN) as client:
            misspelt = await client.get("/deliveries", params={"stauts": "dead"})
            known = await client.get("/deliveries", params={"status": "dead", "limit": 5})
            on_replay = await client.post("/deliveries/1/replay", params={"force": "1"})
    assert misspelt.status_code == 422
    assert misspelt.headers["content-type"] == "application/problem+json"
    assert "stauts" in misspelt.json()["detail"] and "status" in misspelt.json()["detail"]
    assert known.status_code == 200
    assert on_replay.status_code == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/deliveries/99999999999999999999999"),
        ("POST", "/deliveries/99999999999999999999999/replay"),
        ("GET", "/deliveries?before=99999999999999999999999"),
        ("GET", "/events?before=-99999999999999999999999"),
        ("GET", "/deliveries/0"),
    ],
)
async def test_ids_outside_the_stores_integer_range_are_a_422_not_a_500(tmp_path, method, path):
    # Found probing past schemathesis' examples: the database driver raised OverflowError on ids
    # beyond 64 bits, and the answer was a bare 500.
    hook = endpoint("std", "/hooks/in", "http://127.0.0.1:9/unused")
    async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
        async with httpx.AsyncClient(base_url=gw.url + "/_gatehouse/webhooks", headers=ADMIN) as client:
            response = await client.request(method, path)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/events"),
        ("GET", "/deliveries"),
        ("GET", "/deliveries/1"),
        ("POST", "/deliveries/1/replay"),
        ("POST", "/endpoints/std/replay-dead"),
    ],
)
async def test_every_webhook_ops_endpoint_needs_the_admin_token(tmp_path, method, path):
    hook = endpoint("std", "/hooks/in", "http://127.0.0.1:9/unused")
    async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
        async with httpx.AsyncClient(base_url=gw.url + "/_gatehouse/webhooks") as client:
            assert (await client.request(method, path)).status_code == 401
            wrong = {"authorization": "Bearer not-the-admin-token-at-all"}
            assert (await client.request(method, path, headers=wrong)).status_code == 401
            assert (await client.request(method, path, headers=ADMIN)).status_code in (200, 202, 404)


async def test_delivered_events_are_pruned_after_the_retention(tmp_path):
    target = RecordingTarget()
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url)
        settings = {**FAST, "retention_days": 1 / 86400, "webhook_prune_interval": 0.1}  # one second
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **settings) as gw:
            webhooks = gw.state["webhooks"]
            assert webhooks is not None
            async with httpx.AsyncClient(base_url=gw.url) as client:
                await post_signed(client, "/hooks/in", "msg_old", {"n": 1})
            await target.wait_for(1)
            assert len(await webhooks.store.list_events()) == 1
            with anyio.fail_after(5):
                while await webhooks.store.list_events():
                    await anyio.sleep(0.05)
            assert await webhooks.store.list_deliveries() == []


async def test_target_upstream_auth_and_headers_are_sent_with_each_delivery(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBHOOK_TEST_TOKEN", "internal-service-token")
    target = RecordingTarget()
    async with run_uvicorn(target) as svc:
        options = {
            "target": {
                "headers": {"x-tenant": "blue"},
                "upstream_auth": {"type": "bearer", "token_env": "WEBHOOK_TEST_TOKEN"},
            }
        }
        hook = endpoint("std", "/hooks/in", svc.url, **options)
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                await post_signed(client, "/hooks/in", "msg_auth", {"n": 1})
            await target.wait_for(1)
    assert target.received[0].headers["authorization"] == "Bearer internal-service-token"
    assert target.received[0].headers["x-tenant"] == "blue"


async def test_a_delivery_carries_the_clients_default_headers_unless_the_provider_or_gatehouse_sets_them(tmp_path):
    target = RecordingTarget()
    defaults = httpx.AsyncClient().headers
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url)
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                body = json_body({"n": 1})
                headers = {**standard_headers("msg_accept", body), "accept": "application/vnd.test+json"}
                assert (await client.post("/hooks/in", content=body, headers=headers)).status_code == 202
            await target.wait_for(1)
    got = target.received[0].headers
    assert got["accept"] == "application/vnd.test+json"  # the provider's, stored with the event
    assert got["accept-encoding"] == defaults["accept-encoding"]  # the client's
    assert got["user-agent"] == "gatehouse-webhooks"  # ours


async def test_an_attempt_whose_answer_trickles_in_is_cut_off_at_the_targets_timeout(tmp_path):
    async def trickle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            for _ in range(100):  # a byte every 0.2 s: no read waits as long as the 1 s timeout
                await anyio.sleep(0.2)
                await stream.send(b"x")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, trickle)
        hook = endpoint("std", "/hooks/in", f"http://127.0.0.1:{port}/", target={"timeout": 1.0})
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                started = time.monotonic()
                response = await post_signed(client, "/hooks/in", "msg_trickle", {"n": 1})
            delivery_id = await first_delivery_id(gw, response.json()["event_id"])
            found = await first_attempt(gw, delivery_id)
            elapsed = time.monotonic() - started
        tasks.cancel_scope.cancel()
    delivery, attempts = found
    assert attempts[0].error == delivery.last_error == "timed out after 1.0s"
    assert delivery.status == "pending"  # to be retried
    assert elapsed < 3.0


async def test_a_target_that_accepts_with_a_body_it_says_is_gzip_but_is_not_has_the_delivery(tmp_path):
    # Only the status counts: the answer's body is read (to keep the connection) but never decoded.
    async def target(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-encoding", b"gzip"), (b"content-length", b"8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"not gzip"})

    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url)
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                response = await post_signed(client, "/hooks/in", "msg_gzip", {"n": 1})
            delivery_id = await first_delivery_id(gw, response.json()["event_id"])
            found = await first_attempt(gw, delivery_id)
    delivery, attempts = found
    assert (attempts[0].status_code, attempts[0].error) == (200, None)
    assert delivery.status == "delivered"


async def test_shutdown_mid_attempt_hands_the_delivery_back_instead_of_waiting_for_the_lease(tmp_path):
    target = RecordingTarget(delay=1.5)  # still answering when Gatehouse stops
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url)
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                response = await post_signed(client, "/hooks/in", "msg_stop", {"n": 1})
            delivery_id = await first_delivery_id(gw, response.json()["event_id"])
            await target.wait_for(1)
        async with await DeliveryStore.open(store_url(tmp_path)) as store:
            found = await store.get_delivery_with_attempts(delivery_id)
    assert found is not None
    delivery, attempts = found
    assert delivery.status == "pending"  # claimable now, not after webhook_lease_seconds
    assert delivery.lease_owner is None
    assert delivery.last_error == "interrupted by shutdown"
    assert [a.error for a in attempts] == ["interrupted by shutdown"]


async def test_shutdown_mid_attempt_hands_back_a_delivery_the_poller_claimed(tmp_path):
    async with await DeliveryStore.open(store_url(tmp_path)) as store:  # stored before start-up: the poller's
        recorded = await store.record_event("std", "msg_polled", [], b"{}", ["svc"])
    target = RecordingTarget(delay=1.5)  # still answering when Gatehouse stops
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url)
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **FAST):
            await target.wait_for(1)
        async with await DeliveryStore.open(store_url(tmp_path)) as store:
            found = await store.get_delivery_with_attempts(recorded.delivery_ids[0])
    assert found is not None
    delivery, attempts = found
    assert (delivery.status, delivery.lease_owner, delivery.last_error) == ("pending", None, "interrupted by shutdown")
    assert [a.error for a in attempts] == ["interrupted by shutdown"]


async def test_first_attempt_starts_right_after_the_answer_without_waiting_for_a_poll(tmp_path):
    target = RecordingTarget()
    async with run_uvicorn(target) as svc:
        hook = endpoint("std", "/hooks/in", svc.url)
        settings = {**FAST, "webhook_dispatch_interval": 60}  # the poller will not run again in this test
        async with run_gateway(webhooks=[hook], webhook_store=store_url(tmp_path), **settings) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as client:
                started = time.monotonic()
                response = await post_signed(client, "/hooks/in", "msg_now", {"n": 1})
                assert response.status_code == 202
                await target.wait_for(1, timeout=2)
            assert target.received[0].at - started < 1.0
            await wait_status(gw, await first_delivery_id(gw, response.json()["event_id"]), "delivered")
