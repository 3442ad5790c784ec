"""WebSockets from a real browser: headless Chromium pages on two loopback origins connect through Gatehouse.

The route's CORS origin list decides: the allowed page's socket echoes, the other
page's handshake is refused (403) before the upstream hears of it.
"""

from __future__ import annotations

import anyio
import pytest
from playwright.async_api import async_playwright

from tests.e2e.test_cors_browser import CHROMIUM, CHROMIUM_ARGS, page_app
from tests.gateway import route, run_gateway
from tests.servers import run_uvicorn
from tests.websocket_upstream import run_websocket_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

OPEN_SOCKET = """
async ([url, protocol]) => new Promise((resolve) => {
  const ws = new WebSocket(url, [protocol]);
  const seen = [];
  ws.onopen = () => { seen.push("open:" + ws.protocol); ws.send("hello from the page"); };
  ws.onmessage = (event) => { seen.push("message:" + event.data); ws.close(4000, "page done"); };
  ws.onerror = () => seen.push("error");
  ws.onclose = (event) => resolve({seen, code: event.code, reason: event.reason});
})
"""


async def test_a_page_on_an_allowed_origin_talks_and_one_on_another_origin_is_refused():
    with anyio.fail_after(90):
        async with (
            run_uvicorn(page_app, log_level="warning") as allowed_site,
            run_uvicorn(page_app, log_level="warning") as other_site,
            run_websocket_upstream() as up,
        ):
            cors = {"allow_origins": [allowed_site.url]}
            async with run_gateway(route("live", "/live", up.url, cors=cors)) as gw, async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await (await browser.new_context()).new_page()
                    page.set_default_timeout(15_000)
                    url = gw.url.replace("http://", "ws://") + "/live/echo"
                    await page.goto(allowed_site.url + "/")
                    allowed = await page.evaluate(OPEN_SOCKET, [url, "chat.v1"])
                    await page.goto(other_site.url + "/")
                    refused = await page.evaluate(OPEN_SOCKET, [url, "chat.v1"])
                finally:
                    await browser.close()
    assert allowed["seen"] == ["open:chat.v1", "message:hello from the page"], allowed
    assert allowed["code"] == 4000
    assert refused["seen"] == ["error"] and refused["code"] == 1006, refused
    # The upstream heard one handshake, from the allowed page, with its Origin.
    assert [headers["origin"] for _, headers in up.handshakes] == [allowed_site.url]
    assert up.closes == [(4000, "page done")]
