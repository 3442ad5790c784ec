"""The ops page in headless Chromium: it loads from Gatehouse, shows live state, and replays a dead delivery.

The webhooks are the real feature: a signed webhook whose target answers 500
dies after its retry schedule; the page lists it with its attempts, and its
replay button delivers it once the target recovers.
"""

from __future__ import annotations

import anyio
import httpx
import pytest
from playwright.async_api import Route, async_playwright

from tests.e2e.test_cors_browser import CHROMIUM, CHROMIUM_ARGS
from tests.faults import refused_port
from tests.gateway import route, run_gateway
from tests.integration.test_webhooks import first_delivery_id, post_signed, store_url, wait_status
from tests.servers import run_uvicorn
from tests.webhooks import ADMIN_TOKEN, RecordingTarget, endpoint

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_ops_page_shows_live_state_and_replays_a_dead_delivery(upstream, tmp_path):
    server, _ = upstream
    healthy = False
    target = RecordingTarget(respond=lambda _r: (204, []) if healthy else (500, []))
    routes = (route("a", "/a", server.url), route("down", "/down", f"http://127.0.0.1:{refused_port()}"))
    with anyio.fail_after(90):
        async with (
            run_uvicorn(target, log_level="warning") as svc,
            run_gateway(
                *routes,
                admin_token=ADMIN_TOKEN,
                webhooks=[endpoint("billing", "/hooks/billing", svc.url, retry={"schedule": [0.05], "jitter": 0})],
                webhook_store=store_url(tmp_path),
                webhook_dispatch_interval=0.05,
                ops_listen="127.0.0.1:0",
            ) as gw,
            run_gateway(route("a", "/a", server.url), admin_token=ADMIN_TOKEN) as bare,
            async_playwright() as pw,
        ):
            async with httpx.AsyncClient() as client:
                for path in ("/a/echo/1", "/a/echo/2", "/a/status/503", "/down/x"):
                    await client.get(gw.url + path)
                accepted = await post_signed(client, f"{gw.url}/hooks/billing", "msg_1", {"n": 1})
                delivery_id = await first_delivery_id(gw, accepted.json()["event_id"])
                await wait_status(gw, delivery_id, "dead")  # the first attempt and one retry, both 500
                second = await post_signed(client, f"{gw.url}/hooks/billing", "msg_2", {"type": "invoice.paid"})
                second_id = await first_delivery_id(gw, second.json()["event_id"])
                await wait_status(gw, second_id, "dead")
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context()
                context.set_default_timeout(15_000)
                page = await context.new_page()
                await page.goto(f"{gw.ops_url}/_gatehouse/?interval=200")  # the ops listener: no token
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

                await page.fill("#token", ADMIN_TOKEN)
                await page.dispatch_event("#token", "change")
                dead = page.locator(f'tr[data-delivery="{delivery_id}"]')
                await dead.locator("button.replay").wait_for()
                dead_attempts = await dead.locator(".attempts li").all_inner_texts()
                healthy = True
                await dead.locator("button.replay").click()
                await dead.locator("td.delivered").wait_for()
                after_replay_buttons = await dead.locator("button.replay").count()

                # Find an event by the provider's id: only its deliveries are listed.
                await page.fill("#provider-event-id", "msg_2")
                await page.dispatch_event("#provider-event-id", "change")
                await page.locator(f'tr[data-delivery="{second_id}"]').wait_for()
                await page.wait_for_function("document.querySelectorAll('#deliveries tbody tr').length === 1")
                found = page.locator(f'tr[data-delivery="{second_id}"]')
                found_cells = [
                    await found.locator(f".{name}").inner_text()
                    for name in ("provider-event-id", "event-type", "target")
                ]
                await page.fill("#provider-event-id", "msg_unknown")
                await page.dispatch_event("#provider-event-id", "change")
                await page.wait_for_function(
                    "document.getElementById('webhooks-note').textContent.includes('msg_unknown')"
                )
                not_found_rows = await page.locator("#deliveries tbody tr").count()

                # Two searches in a row, the first one's answer late: it must not paint over the second.
                # (No interval refresh here, so a bad paint would stay.)
                async def late(r: Route) -> None:
                    await anyio.sleep(1.0)
                    await r.continue_()

                racing = await context.new_page()
                await racing.goto(f"{gw.ops_url}/_gatehouse/?interval=600000")
                await racing.fill("#token", ADMIN_TOKEN)
                await racing.dispatch_event("#token", "change")
                await racing.locator(f'tr[data-delivery="{second_id}"]').wait_for()
                await racing.route(f"**/webhooks/deliveries/{second_id}", late)
                await racing.fill("#provider-event-id", "msg_2")
                await racing.dispatch_event("#provider-event-id", "change")
                await racing.fill("#provider-event-id", "msg_unknown")
                await racing.dispatch_event("#provider-event-id", "change")
                await racing.wait_for_function(
                    "document.getElementById('webhooks-note').textContent.includes('msg_unknown')"
                )
                await anyio.sleep(1.5)  # the msg_2 search's late answer has landed
                raced_rows = await racing.locator("#deliveries tbody tr").count()
                raced_note = await racing.locator("#webhooks-note").inner_text()

                await page.goto(f"{bare.url}/_gatehouse/?interval=200")  # the public port: the token first
                await page.wait_for_function("document.body.dataset.loaded === 'true'")
                bare_before_token = await page.locator("#routes-note").inner_text()
                bare_rows_before_token = await page.locator('tr[data-route="a"]').count()
                await page.fill("#token", ADMIN_TOKEN)
                await page.dispatch_event("#token", "change")
                await page.wait_for_function(
                    "document.getElementById('webhooks-note').textContent === 'Webhooks are not configured.'"
                )
                bare_note = await page.locator("#webhooks-note").inner_text()
                await page.locator('tr[data-route="a"] .healthy').wait_for()
            finally:
                await browser.close()

    assert "/a" in a_text and server.url in a_text and "healthy" in a_text
    assert a_recent_at_open == "0"  # errors before the page opened are not recent to it
    assert a_requests == "2 / 0 / 0 / 2"
    assert down_errors == "connect: 1"
    assert before_token == "Enter the admin token to see webhook deliveries."
    assert len(dead_attempts) == 2 and all(": 500 in " in line for line in dead_attempts)
    assert len(target.received) == 5 and after_replay_buttons == 0  # 2 x two 500s, then the replay delivered
    assert found_cells == ["msg_2", "invoice.paid", "svc"]
    assert not_found_rows == 0
    assert (raced_rows, raced_note) == (0, "No event with provider id msg_unknown.")
    # On the public port nothing shows before the token; without webhooks the panel says so.
    assert bare_before_token == "Enter the admin token to see routes and upstreams."
    assert bare_rows_before_token == 0
    assert bare_note == "Webhooks are not configured."
