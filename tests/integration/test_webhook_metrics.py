"""Webhook metrics: intake by outcome, delivery attempts by outcome, and the queue gauges, scraped exactly."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway import run_gateway
from tests.integration.test_metrics import scrape, value
from tests.integration.test_webhooks import first_delivery_id, post_signed, store_url, wait_status
from tests.servers import run_uvicorn
from tests.webhooks import ADMIN_TOKEN, RecordingTarget, endpoint, json_body

pytestmark = pytest.mark.anyio


async def test_webhook_intake_deliveries_and_queue_are_counted(tmp_path):
    target = RecordingTarget(respond=lambda _r: (500, []))
    async with run_uvicorn(target, log_level="warning") as svc:
        hook = endpoint("billing", "/hooks/billing", svc.url, retry={"schedule": [0.05], "jitter": 0})
        async with (
            run_gateway(
                webhooks=[hook],
                webhook_store=store_url(tmp_path),
                webhook_dispatch_interval=0.05,
                admin_token=ADMIN_TOKEN,
            ) as gw,
            httpx.AsyncClient() as client,
        ):
            accepted = await post_signed(client, f"{gw.url}/hooks/billing", "msg_1", {"n": 1})
            duplicate = await post_signed(client, f"{gw.url}/hooks/billing", "msg_1", {"n": 1})
            forged = await client.post(
                f"{gw.url}/hooks/billing", content=json_body({"n": 2}), headers={"webhook-id": "msg_2"}
            )
            await wait_status(gw, await first_delivery_id(gw, accepted.json()["event_id"]), "dead")
            samples = await scrape(client, gw.url, token=ADMIN_TOKEN)
    assert (accepted.status_code, duplicate.status_code, forged.status_code) == (202, 200, 401)
    intake = "gatehouse_webhook_intake_total"
    assert value(samples, intake, endpoint="billing", outcome="accepted") == 1
    assert value(samples, intake, endpoint="billing", outcome="duplicate") == 1
    assert value(samples, intake, endpoint="billing", outcome="rejected") == 1
    deliveries = "gatehouse_webhook_delivery_attempts_total"
    assert value(samples, deliveries, endpoint="billing", outcome="failed") == 1  # the first 500, retried
    assert value(samples, deliveries, endpoint="billing", outcome="dead") == 1  # the retry's 500: out of schedule
    assert value(samples, deliveries, endpoint="billing", outcome="delivered") == 0
    deprecated = "gatehouse_webhook_deliveries_total"
    assert [value(samples, deprecated, endpoint="billing", outcome=o) for o in ("failed", "dead")] == [1, 1]
    assert samples["gatehouse_webhook_queue_depth", ()] == 0  # nothing due: the one delivery is dead
    assert samples["gatehouse_webhook_oldest_due_seconds", ()] == 0
