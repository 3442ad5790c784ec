"""Credentials the gateway presents upstream: bearer, basic, OAuth2 client credentials, HMAC signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field

import anyio
import httpx
import pytest

from tests.gateway import route, run_gateway
from tests.servers import run_uvicorn

pytestmark = pytest.mark.anyio


def upstream_headers(response):
    return {name: value for name, value in response.json()["headers"]}


async def test_bearer_token_comes_from_the_environment_and_replaces_the_callers(upstream, monkeypatch):
    server, _ = upstream
    monkeypatch.setenv("USERS_API_TOKEN", "s3cret-token")
    spec = route("u", "/u", server.url, upstream_auth={"type": "bearer", "token_env": "USERS_API_TOKEN"})
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/u/echo/x", headers={"authorization": "Bearer the-callers"})
    assert upstream_headers(response)["authorization"] == "Bearer s3cret-token"


async def test_basic_upstream_credentials(upstream):
    server, _ = upstream
    spec = route("u", "/u", server.url, upstream_auth={"type": "basic", "username": "svc", "password": "pw"})
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/u/echo/x")
    assert upstream_headers(response)["authorization"] == "Basic " + base64.b64encode(b"svc:pw").decode()


async def test_hmac_signature_covers_method_path_timestamp_and_body(upstream):
    server, _ = upstream
    auth = {"type": "hmac", "secret": "hmac-key", "key_id": "gw-1"}
    body = b'{"amount": 10}'
    async with run_gateway(route("u", "/u", server.url, upstream_auth=auth)) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.post("/u/echo/pay?x=1", content=body)
    seen = upstream_headers(response)
    timestamp = seen["x-signature-timestamp"]
    message = b"\n".join([b"POST", b"/echo/pay?x=1", timestamp.encode(), hashlib.sha256(body).hexdigest().encode()])
    assert seen["x-signature"] == hmac.new(b"hmac-key", message, hashlib.sha256).hexdigest()
    assert seen["x-signature-key-id"] == "gw-1"
    assert response.json()["body_length"] == len(body)


@dataclass
class TokenServer:
    """A token endpoint that is slow on purpose, so concurrent callers pile up behind one fetch."""

    delay: float = 0.3
    expires_in: int = 3600
    issued: list[str] = field(default_factory=list)
    forms: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        form = b""
        while True:
            message = await receive()
            form += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.forms.append(form.decode())
        self.authorizations.append(dict(scope["headers"]).get(b"authorization", b"").decode())
        await anyio.sleep(self.delay)
        token = f"token-{len(self.issued) + 1}"
        self.issued.append(token)
        body = json.dumps({"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def oauth_route(upstream_url, token_url):
    auth = {
        "type": "oauth2_client_credentials",
        "token_url": token_url,
        "client_id": "gatehouse",
        "client_secret": "client-secret",
        "scope": "users.read",
    }
    return route("u", "/u", upstream_url, upstream_auth=auth)


async def test_oauth2_one_token_request_serves_100_simultaneous_callers(upstream):
    server, stats = upstream
    tokens = TokenServer()
    async with run_uvicorn(tokens, log_level="warning") as token_server:
        spec = oauth_route(server.url, f"{token_server.url}/token")
        async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url, timeout=20) as client:
            results: list[httpx.Response] = []

            async def call():
                results.append(await client.get("/u/echo/x"))

            async with anyio.create_task_group() as group:
                for _ in range(100):
                    group.start_soon(call)
            again = await client.get("/u/echo/x")  # cached: no new fetch
    assert [r.status_code for r in results] == [200] * 100
    assert {upstream_headers(r)["authorization"] for r in results} == {"Bearer token-1"}
    assert upstream_headers(again)["authorization"] == "Bearer token-1"
    assert tokens.issued == ["token-1"]
    assert "grant_type=client_credentials" in tokens.forms[0] and "scope=users.read" in tokens.forms[0]
    assert tokens.authorizations[0] == "Basic " + base64.b64encode(b"gatehouse:client-secret").decode()
    assert stats.requests["/echo/x"] == 101


async def test_oauth2_token_is_renewed_and_the_request_retried_once_on_an_upstream_401():
    seen: list[str] = []

    async def picky_upstream(scope, receive, send):  # accepts only the second token
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        seen.append(auth)
        status = 200 if auth == "Bearer token-2" else 401
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    tokens = TokenServer(delay=0)
    async with (
        run_uvicorn(tokens, log_level="warning") as token_server,
        run_uvicorn(picky_upstream, log_level="warning") as upstream_server,
    ):
        spec = oauth_route(upstream_server.url, f"{token_server.url}/token")
        async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.get("/u/anything")
    assert response.status_code == 200
    assert seen == ["Bearer token-1", "Bearer token-2"]
    assert tokens.issued == ["token-1", "token-2"]


async def test_oauth2_token_endpoint_failure_is_a_502(upstream):
    server, stats = upstream
    spec = oauth_route(server.url, "http://127.0.0.1:9/token")
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/u/echo/x")
    assert response.status_code == 502
    assert "client-secret" not in response.text
    assert stats.requests["/echo/x"] == 0
