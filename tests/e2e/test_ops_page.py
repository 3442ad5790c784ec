"""The ops page in headless Chromium: it loads from Gatehouse, shows live state, and replays a dead delivery.

The webhook endpoints here are a STUB of the admin webhooks API's contract
(issue 5 is not merged into this branch yet): ``GET /webhooks/deliveries``,
``GET /webhooks/deliveries/{id}`` and ``POST /webhooks/deliveries/{id}/replay``.
Switch the test to the real feature when it lands.
"""

from __future__ import annotations

import anyio
import httpx
import pytest
from fastapi import APIRouter, HTTPException
from playwright.async_api import async_playwright

from app.ops import AdminDep
from tests.e2e.test_cors_browser import CHROMIUM, CHROMIUM_ARGS
from tests.faults import refused_port
from tests.gateway import route, run_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "ops-page-admin-token-0123456789"


def webhooks_stub() -> tuple[APIRouter, list[str]]:
    deliveries = {
        "d-dead": {
            "id": "d-dead",
            "event_id": "e1",
            "endpoint": "billing",
            "target": "http://127.0.0.1:9/hook",
            "status": "dead",
            "attempts": 2,
            "next_attempt_at": None,
            "last_status": 500,
            "last_error": "status 500",
            "updated_at": "2026-01-01T00:00:02Z",
        },
        "d-ok": {
            "id": "d-ok",
            "event_id": "e2",
            "endpoint": "billing",
            "target": "http://127.0.0.1:9/hook",
            "status": "delivered",
            "attempts": 1,
            "next_attempt_at": None,
            "last_status": 200,
            "last_error": None,
            "updated_at": "2026-01-01T00:00:03Z",
        },
    }
    attempts = {
        "d-dead": [
            {"started_at": "2026-01-01T00:00:00Z", "duration_ms": 12, "status_code": 500, "error": "status 500"},
            {"started_at": "2026-01-01T00:00:01Z", "duration_ms": 11, "status_code": 500, "error": "status 500"},
        ],
        "d-ok": [{"started_at": "2026-01-01T00:00:03Z", "duration_ms": 5, "status_code": 200, "error": None}],
    }
    replayed: list[str] = []
    router = APIRouter()

    @router.get("/deliveries")
    async def listing(_admin: AdminDep, status: str | None = None) -> dict:
        return {"deliveries": [d for d in deliveries.values() if status in (None, "", d["status"])]}

    @router.get("/deliveries/{delivery_id}")
    async def detail(delivery_id: str, _admin: AdminDep) -> dict:
        if delivery_id not in deliveries:
            raise HTTPException(404, "no such delivery")
        return deliveries[delivery_id] | {"attempts_log": attempts[delivery_id]}

    @router.post("/deliveries/{delivery_id}/replay", status_code=202)
    async def replay(delivery_id: str, _admin: AdminDep) -> dict:
        replayed.append(delivery_id)
        deliveries[delivery_id]["status"] = "pending"
        return {"replayed": delivery_id}

    return router, replayed


async def test_ops_page_shows_live_state_and_replays_a_dead_delivery(upstream):
    server, _ = upstream
    stub, replayed = webhooks_stub()
    routes = (route("a", "/a", server.url), route("down", "/down", f"http://127.0.0.1:{refused_port()}"))
    with anyio.fail_after(90):
        async with (
            run_gateway(*routes, admin_token=TOKEN) as gw,
            run_gateway(route("a", "/a", server.url)) as bare,
            async_playwright() as pw,
        ):
            gw.app.include_router(stub, prefix="/_gatehouse/webhooks")
            async with httpx.AsyncClient() as client:
                for path in ("/a/echo/1", "/a/echo/2", "/a/status/503", "/down/x"):
                    await client.get(gw.url + path)
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context()
                context.set_default_timeout(15_000)
                page = await context.new_page()
                await page.goto(f"{gw.url}/_gatehouse/?interval=200")
                row_a = page.locator('tr[data-route="a"]')
                await row_a.locator(".healthy").wait_for()
                a_text = await row_a.inner_text()
                a_recent_at_open = await row_a.locator(".recent-errors").inner_text()
                async with httpx.AsyncClient() as client:  # a new error while the page is open
                    await client.get(f"{gw.url}/a/status/502")
                await page.wait_for_function(
                    """document.querySelector('tr[data-route="a"] .recent-errors').textContent === '1'"""
                )
                a_requests = await row_a.locator(".requests").inner_text()
                down_errors = await page.locator('tr[data-route="down"] .upstream-errors').inner_text()
                before_token = await page.locator("#webhooks-note").inner_text()

                await page.fill("#token", TOKEN)
                await page.dispatch_event("#token", "change")
                dead = page.locator('tr[data-delivery="d-dead"]')
                await dead.locator("button.replay").wait_for()
                dead_attempts = await dead.locator(".attempts li").all_inner_texts()
                ok_buttons = await page.locator('tr[data-delivery="d-ok"] button').count()
                await dead.locator("button.replay").click()
                await dead.locator("td.pending").wait_for()
                after_replay_buttons = await dead.locator("button.replay").count()

                await page.goto(f"{bare.url}/_gatehouse/")
                await page.locator('tr[data-route="a"]').wait_for()
                await page.wait_for_function("document.body.dataset.loaded === 'true'")
                bare_note = await page.locator("#webhooks-note").inner_text()
            finally:
                await browser.close()

    assert "/a" in a_text and server.url in a_text and "healthy" in a_text
    assert a_recent_at_open == "0"  # errors before the page opened are not recent to it
    assert a_requests == "2 / 0 / 0 / 2"
    assert down_errors == "connect: 1"
    assert before_token == "Enter the admin token to see webhook deliveries."
    assert len(dead_attempts) == 2 and all("500" in line for line in dead_attempts)
    assert ok_buttons == 0
    assert replayed == ["d-dead"] and after_replay_buttons == 0
    # Without webhooks the panel says so; the rest of the page works.
    assert bare_note == "Webhooks are not configured."
