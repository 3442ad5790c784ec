"""A started gateway imports only what its configuration uses: without webhook endpoints no SQLAlchemy,
alembic or webhook intake (its signature verifiers), without JWT auth no PyJWT or ``cryptography``, without
an HTTP/2 route no h2, without auth no httpcore (the edge's client), without a rate limit no ``limits``; never
httpx's command-line client (rich, pygments),
nor uvicorn's h11 protocol and h11 (``gatehouse serve`` runs httptools; ``uvicorn --http h11`` loads them itself);
before the first WebSocket, neither websockets nor the WebSocket protocol and relay (``app.serving.websocket_upgrade``).
What the configuration does use is loaded at start-up, not on the first request
(the rate-limit storage: tests/unit/edge/test_resources.py), except the WebSocket stack, which
every route that allows GET takes by default: the first upgrade imports it.

Checked in a fresh interpreter: this process has imported everything the other
tests use, so its ``sys.modules`` says nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAZY = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "alembic",
    "mako",
    "app.webhooks.store",
    "app.webhooks.database",
    "app.webhooks.intake",
    "app.webhooks.signatures",
    "jwt",
    "cryptography",
    "app.edge.tokens",
    "h2",
    "hpack",
    "httpcore",
    "app.outbound.http2",
    "limits",
    "app.edge.ratelimit",
    "httpx._main",
    "rich",
    "pygments",
    "h11",
    "uvicorn.protocols.http.h11_impl",
    "pydantic.v1",
    "websockets",
    "uvicorn.protocols.websockets.websockets_sansio_impl",
    "app.serving.websocket_protocol",
    "app.assembly.websocket",
    "app.proxy.websocket",
    "app.resilience.websocket",
    "app.outbound.websocket",
)

PROBE = """
import json, sys
import anyio
import app.main
from app.config.settings import Settings

settings = Settings(config=sys.argv[1], {extra})
gateway = app.main.create_app(settings)

async def start_and_stop() -> None:
    async with gateway.router.lifespan_context(gateway) as state:
        # One ops request: FastAPI builds its routes for the app on the first one it routes.
        sent = []
        scope = {{
            "type": "http", "asgi": {{"version": "3.0"}}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": "/_gatehouse/readyz", "raw_path": b"/_gatehouse/readyz", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"gatehouse")], "client": ("127.0.0.1", 9), "server": ("127.0.0.1", 80),
            "state": dict(state),
        }}

        async def receive():
            return {{"type": "http.request", "body": b"", "more_body": False}}

        async def send(message):
            sent.append(message)

        await gateway(scope, receive, send)
        assert sent[0]["status"] in (200, 503), sent

anyio.run(start_and_stop)
print(json.dumps(sorted(
    name for name, module in sys.modules.items()
    if module is not None and (name.split(".")[0] in {names} or name in {names})
)))
"""


def loaded_after_start(tmp_path: Path, extra: str = "") -> list[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEHOUSE_")}
    env["PYTHONPATH"] = str(ROOT)
    code = PROBE.format(extra=extra, names=repr(set(LAZY)))
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "examples" / "gatehouse.yaml")],
        cwd=tmp_path,  # no .env of the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_no_webhooks_no_sqlalchemy(tmp_path: Path) -> None:
    assert loaded_after_start(tmp_path) == []


def test_httpx_cli_dependencies_are_installed_here() -> None:
    # Without them the first test could not see httpx's CLI being imported: schemathesis (dev) brings them.
    assert importlib.util.find_spec("rich") is not None
    assert importlib.util.find_spec("pygments") is not None


def test_httpx_still_imports_with_its_cli_left_out() -> None:
    code = "import app, httpx; print(httpx.main.__module__, httpx.AsyncClient.__name__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["httpx", "AsyncClient"]  # httpx's own stand-in main, not httpx._main's


def test_a_configured_store_is_still_checked_at_start_up(tmp_path: Path) -> None:
    # The probe itself: with a non-default webhook_store the URL is validated, so SQLAlchemy loads.
    loaded = loaded_after_start(tmp_path, extra=f"webhook_store='sqlite:///{tmp_path}/hooks.db'")
    assert "sqlalchemy" in loaded


def test_webhook_endpoints_load_the_intake_at_start_up(tmp_path: Path) -> None:
    hook = (
        "{'name': 'gh', 'path': '/hooks', 'verify': {'scheme': 'standard', 'secrets': ['whsec_"
        + "A" * 32
        + "']}, 'deliver_to': [{'name': 'svc', 'url': 'http://127.0.0.1:9'}]}"
    )
    loaded = loaded_after_start(tmp_path, extra=f"webhooks=[{hook}], webhook_store='sqlite:///{tmp_path}/hooks.db'")
    assert {"app.webhooks.intake", "app.webhooks.signatures"} <= set(loaded)


def test_an_http2_route_loads_h2_at_start_up(tmp_path: Path) -> None:
    route = "{'name': 'h2c', 'prefix': '/', 'upstream': 'http://127.0.0.1:9', 'http2': True}"
    loaded = loaded_after_start(tmp_path, extra=f"routes=[{route}]")
    assert {"h2", "app.outbound.http2"} <= set(loaded)


def test_auth_builds_the_edge_client_at_start_up(tmp_path: Path) -> None:
    auth = "{'type': 'api_key', 'keys': {'ci': 'sha256:' + '0' * 64}}"
    loaded = loaded_after_start(tmp_path, extra=f"auth={auth}")
    assert "httpcore" in loaded
