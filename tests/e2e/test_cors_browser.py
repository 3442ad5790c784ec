"""CORS in a real browser: headless Chromium on one loopback origin fetches Gatehouse on another.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), driven by
playwright-python; playwright never downloads a browser here.
"""

from __future__ import annotations

import anyio
import pytest
from playwright.async_api import async_playwright

from tests.gateway import route, run_gateway
from tests.servers import run_uvicorn

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE = b"<!doctype html><html><head><title>app</title></head><body>app</body></html>"

FETCH = """
async ([url, init]) => {
  try {
    const response = await fetch(url, init);
    return {ok: true, status: response.status, body: await response.text()};
  } catch (error) {
    return {ok: false, error: String(error)};
  }
}
"""


async def page_app(scope, receive, send):
    """A static page: the origin the browser runs the fetches from."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    headers = [(b"content-type", b"text/html"), (b"content-length", str(len(PAGE)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": PAGE})


async def test_browser_allows_the_configured_origin_and_blocks_another(upstream):
    server, stats = upstream
    with anyio.fail_after(90):
        async with (
            run_uvicorn(page_app, log_level="warning") as allowed_site,
            run_uvicorn(page_app, log_level="warning") as other_site,
        ):
            cors = {
                "allow_origins": [allowed_site.url],
                "allow_methods": ["GET", "PUT"],
                "allow_headers": ["X-Trace"],
                "allow_credentials": True,
            }
            async with run_gateway(route("api", "/api", server.url, cors=cors)) as gw, async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    context = await browser.new_context()
                    context.set_default_timeout(15_000)
                    page = await context.new_page()

                    async def fetch_from(site, path, **init):
                        await page.goto(site.url + "/")
                        return await page.evaluate(FETCH, [f"{gw.url}/api/echo/{path}", init])

                    simple = await fetch_from(allowed_site, "a-simple")
                    with_credentials = await fetch_from(
                        allowed_site,
                        "a-put",
                        method="PUT",
                        credentials="include",
                        headers={"X-Trace": "1"},
                        body="hello",
                    )
                    blocked_simple = await fetch_from(other_site, "b-simple", credentials="include")
                    blocked_put = await fetch_from(
                        other_site, "b-put", method="PUT", headers={"X-Trace": "1"}, body="x"
                    )
                finally:
                    await browser.close()

    assert simple["ok"] and simple["status"] == 200, simple
    assert '"path":"/echo/a-simple"' in simple["body"].replace(" ", "")
    assert with_credentials["ok"] and with_credentials["status"] == 200, with_credentials
    assert '"method":"PUT"' in with_credentials["body"].replace(" ", "")
    # The browser refuses both answers to the other origin.
    assert not blocked_simple["ok"] and "TypeError" in blocked_simple["error"], blocked_simple
    assert not blocked_put["ok"] and "TypeError" in blocked_put["error"], blocked_put
    # Preflights were answered by the gateway: the upstream saw the PUT once, and nothing of the refused PUT.
    assert stats.requests["/echo/a-put"] == 1
    assert stats.requests["/echo/b-put"] == 0
