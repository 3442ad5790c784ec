"""Upstream credentials: the filter hands the route's ``httpx.Auth`` on; each auth's flow, exactly."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

import anyio
import httpx
import pytest

from app.config.edge import OAuth2ClientCredentials
from app.config.settings import Settings
from app.edge.credentials import UpstreamAuthFilter
from app.errors import UpstreamError
from app.outbound.auth import BearerAuth, HmacSigningAuth, OAuth2ClientCredentialsAuth, build_upstream_auth
from app.outbound.clients import make_client
from app.outbound.urls import exact_url
from app.proxy.exchange import Exchange, build_chain
from app.proxy.forwarding import send_upstream
from app.proxy.routing import CompiledRoute

pytestmark = pytest.mark.anyio

UPSTREAM = httpx.URL("http://127.0.0.1:9")
TOKEN_URL = "https://idp.test/oauth/token"


def compile_route(upstream_auth):
    route_spec = {"name": "api", "prefix": "/api", "upstream": str(UPSTREAM), "upstream_auth": upstream_auth}
    settings = Settings(routes=[route_spec])
    return CompiledRoute.compile(settings.routes[0], settings.timeout, *settings.policies_for(settings.routes[0]))


def no_http():
    raise AssertionError("this auth must not fetch anything")


def upstream_auth(spec):
    """The route's ``httpx.Auth``, built as the filter assembly builds it."""
    return build_upstream_auth(compile_route(spec).edge.upstream_auth, no_http)


@dataclass(frozen=True)
class Seen:
    """A request as the upstream got it (httpx re-sends the same, mutated, ``Request`` on a retry)."""

    method: str
    raw_path: bytes
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name):
        return dict(self.headers)[name]


class Recorder:
    """A MockTransport handler: records each request, answers from ``statuses`` (then 200)."""

    def __init__(self, *statuses):
        self.requests = []
        self._statuses = list(statuses)

    async def __call__(self, request):
        # Read the stream as a transport would: ``request.aread()`` would turn a streamed body into a buffered one.
        body = b"".join([chunk async for chunk in request.stream])
        self.requests.append(Seen(request.method, request.url.raw_path, request.headers.multi_items(), body))
        return httpx.Response(self._statuses.pop(0) if self._statuses else 200)


class StreamingTransport(httpx.AsyncBaseTransport):
    """Like ``httpx.MockTransport`` without its ``request.aread()``, which buffers a streamed body."""

    def __init__(self, handler):
        self._handler = handler

    async def handle_async_request(self, request):
        return await self._handler(request)


def client_for(handler):
    transport = StreamingTransport(handler) if isinstance(handler, Recorder) else httpx.MockTransport(handler)
    return make_client(timeout=httpx.Timeout(5), transport=transport)


# The filter


async def test_filter_sets_the_routes_auth_on_the_exchange_before_calling_on(monkeypatch):
    monkeypatch.setenv("API_TOKEN", "s3cret")
    route = compile_route({"type": "bearer", "token_env": "API_TOKEN"})
    auth = build_upstream_auth(route.edge.upstream_auth, no_http)
    assert isinstance(auth, BearerAuth)
    seen = []

    async def endpoint(exchange):
        seen.append(exchange.upstream_auth)
        return httpx.Response(204)

    exchange = Exchange(route, "GET", UPSTREAM.join("/x"), [])
    response = await UpstreamAuthFilter(auth)(exchange, endpoint)
    assert response.status_code == 204
    assert seen == [auth]
    assert exchange.upstream_auth is auth


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ({"type": "basic", "username": "svc", "password": "pw"}, httpx.BasicAuth),
        ({"type": "hmac", "secret": "k"}, HmacSigningAuth),
        (
            {"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "c", "client_secret": "s"},
            OAuth2ClientCredentialsAuth,
        ),
    ],
    ids=["basic", "hmac", "oauth2"],
)
async def test_build_upstream_auth_picks_the_class_for_the_type(spec, kind):
    assert type(upstream_auth(spec)) is kind


async def test_bearer_through_send_upstream_replaces_the_callers_authorization(monkeypatch):
    monkeypatch.setenv("API_TOKEN", "s3cret")
    route = compile_route({"type": "bearer", "token_env": "API_TOKEN"})
    upstream = Recorder()
    async with client_for(upstream) as client:
        auth = build_upstream_auth(route.edge.upstream_auth, no_http)
        handler = build_chain([UpstreamAuthFilter(auth)], send_upstream)
        headers = [(b"authorization", b"Bearer the-callers"), (b"accept", b"*/*"), (b"authorization", b"Basic x")]
        exchange = Exchange(route, "GET", exact_url(UPSTREAM, "/v1/a|b", "q=%zz"), headers, client=client)
        response = await handler(exchange)
        await response.aclose()
    [request] = upstream.requests
    assert request.raw_path == b"/v1/a|b?q=%zz"
    assert request.headers == [("host", "127.0.0.1:9"), ("authorization", "Bearer s3cret"), ("accept", "*/*")]


async def test_basic_upstream_auth_sends_the_configured_pair():
    auth = upstream_auth({"type": "basic", "username": "svc", "password": "pä"})
    upstream = Recorder()
    async with client_for(upstream) as client:
        await client.get(UPSTREAM.join("/x"), auth=auth)
    assert upstream.requests[0].header("authorization") == "Basic " + base64.b64encode("svc:pä".encode()).decode()


# HMAC signatures


def expected_signature(key, method, target, timestamp, body):
    message = b"\n".join([method, target, timestamp, hashlib.sha256(body).hexdigest().encode()])
    return hmac.new(key, message, hashlib.sha256).hexdigest()


async def test_hmac_signs_method_exact_target_timestamp_and_body():
    spec = {"type": "hmac", "secret": "hmac-key", "key_id": "gw-1"}
    auth = upstream_auth(spec)
    upstream = Recorder()
    body = b'{"amount": 10}'
    url = exact_url(UPSTREAM, "/echo/pay|x", "x=1&sig=%2F%zz")
    before = int(time.time())
    async with client_for(upstream) as client:
        response = await client.post(url, content=body, auth=auth)
    after = int(time.time())
    assert response.status_code == 200
    [request] = upstream.requests
    timestamp = request.header("x-signature-timestamp")
    assert before <= int(timestamp) <= after
    target = b"/echo/pay|x?x=1&sig=%2F%zz"
    assert request.raw_path == target
    assert request.header("x-signature") == expected_signature(b"hmac-key", b"POST", target, timestamp.encode(), body)
    assert request.header("x-signature-key-id") == "gw-1"
    assert request.body == body


async def test_hmac_with_custom_headers_no_key_id_and_an_empty_body(monkeypatch):
    monkeypatch.setenv("SIGNING_KEY", "env-key")
    spec = {"type": "hmac", "secret_env": "SIGNING_KEY", "signature_header": "X-Sig", "timestamp_header": "X-Ts"}
    auth = upstream_auth(spec)
    upstream = Recorder()
    async with client_for(upstream) as client:
        await client.get(UPSTREAM.join("/a"), auth=auth)
    [request] = upstream.requests
    timestamp = request.header("x-ts").encode()
    assert request.header("x-sig") == expected_signature(b"env-key", b"GET", b"/a", timestamp, b"")
    assert [name for name, _ in request.headers if name.startswith("x-")] == ["x-ts", "x-sig"]


async def test_hmac_buffers_a_streamed_body_to_sign_it():
    async def body():
        yield b"part-1|"
        yield b"part-2"

    auth = upstream_auth({"type": "hmac", "secret": "k"})
    upstream = Recorder()
    async with client_for(upstream) as client:
        await client.put(UPSTREAM.join("/b"), content=body(), auth=auth)
    [request] = upstream.requests
    timestamp = request.header("x-signature-timestamp").encode()
    assert request.body == b"part-1|part-2"
    assert request.header("x-signature") == expected_signature(b"k", b"PUT", b"/b", timestamp, b"part-1|part-2")


# OAuth2 client credentials


def oauth2_spec(**options):
    spec = {
        "type": "oauth2_client_credentials",
        "token_url": TOKEN_URL,
        "client_id": "gatehouse",
        "client_secret": "cl1ent-s3cret",
        **options,
    }
    return OAuth2ClientCredentials(**spec)


class TokenEndpoint:
    """Issues ``tok-1``, ``tok-2``...; slow on purpose so concurrent callers pile up behind one fetch."""

    def __init__(self, expires_in=3600, delay=0.05, status=200):
        self.requests = []
        self._expires_in = expires_in
        self._delay = delay
        self._status = status

    async def __call__(self, request):
        await request.aread()
        self.requests.append(request)
        await anyio.sleep(self._delay)
        if self._status != 200:
            return httpx.Response(self._status, json={"error": "invalid_client"})
        return httpx.Response(200, json={"access_token": f"tok-{len(self.requests)}", "expires_in": self._expires_in})


async def test_twenty_concurrent_token_calls_make_one_fetch():
    endpoint = TokenEndpoint()
    async with client_for(endpoint) as http:
        auth = OAuth2ClientCredentialsAuth(oauth2_spec(scope="orders:read orders:write", audience="api"), lambda: http)
        tokens = []

        async def take():
            tokens.append(await auth.token())

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(take)
        assert tokens == ["tok-1"] * 20
        assert auth.fetches == 1
        assert await auth.token() == "tok-1"  # cached
    [request] = endpoint.requests
    assert request.method == "POST"
    assert str(request.url) == TOKEN_URL
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"gatehouse:cl1ent-s3cret").decode()
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qsl(request.content.decode()) == [
        ("grant_type", "client_credentials"),
        ("scope", "orders:read orders:write"),
        ("audience", "api"),
    ]


async def test_401_with_a_buffered_body_retries_once_with_a_renewed_token():
    tokens = TokenEndpoint()
    upstream = Recorder(401)
    async with client_for(tokens) as http, client_for(upstream) as client:
        auth = OAuth2ClientCredentialsAuth(oauth2_spec(), lambda: http)
        response = await client.post(UPSTREAM.join("/orders"), content=b'{"n": 1}', auth=auth)
    assert response.status_code == 200
    assert [(r.header("authorization"), r.body) for r in upstream.requests] == [
        ("Bearer tok-1", b'{"n": 1}'),
        ("Bearer tok-2", b'{"n": 1}'),
    ]
    assert auth.fetches == 2


async def test_a_second_401_is_returned_not_retried_again():
    tokens = TokenEndpoint()
    upstream = Recorder(401, 401, 401)
    async with client_for(tokens) as http, client_for(upstream) as client:
        auth = OAuth2ClientCredentialsAuth(oauth2_spec(), lambda: http)
        response = await client.get(UPSTREAM.join("/orders"), auth=auth)
    assert response.status_code == 401
    assert [r.header("authorization") for r in upstream.requests] == ["Bearer tok-1", "Bearer tok-2"]


async def test_401_with_a_streamed_body_is_not_retried():
    async def body():
        yield b"part-1"
        yield b"part-2"

    tokens = TokenEndpoint()
    upstream = Recorder(401)
    async with client_for(tokens) as http, client_for(upstream) as client:
        auth = OAuth2ClientCredentialsAuth(oauth2_spec(), lambda: http)
        response = await client.post(UPSTREAM.join("/orders"), content=body(), auth=auth)
    assert response.status_code == 401
    assert [(r.header("authorization"), r.body) for r in upstream.requests] == [("Bearer tok-1", b"part-1part-2")]
    assert auth.fetches == 1


async def test_a_short_lived_token_is_renewed_at_half_its_life():
    tokens = TokenEndpoint(expires_in=1.0, delay=0)  # renewed 0.5s after it was fetched
    async with client_for(tokens) as http:
        auth = OAuth2ClientCredentialsAuth(oauth2_spec(), lambda: http)
        assert await auth.token() == "tok-1"
        assert await auth.token() == "tok-1"
        await anyio.sleep(0.6)
        assert await auth.token() == "tok-2"
    assert auth.fetches == 2


async def test_token_endpoint_failure_is_an_upstream_error():
    async with client_for(TokenEndpoint(status=401, delay=0)) as http:
        auth = OAuth2ClientCredentialsAuth(oauth2_spec(), lambda: http)
        with pytest.raises(UpstreamError) as raised:
            await auth.token()
    assert raised.value.status == 502
    assert raised.value.detail.startswith(f"Could not obtain an upstream token from {TOKEN_URL} (Client error '401")


async def test_token_response_without_access_token_is_an_upstream_error():
    def empty(request):  # noqa: ARG001
        return httpx.Response(200, json={"access_token": ""})

    async with client_for(empty) as http:
        with pytest.raises(UpstreamError) as raised:
            await OAuth2ClientCredentialsAuth(oauth2_spec(), lambda: http).token()
    assert raised.value.detail == f"The token endpoint {TOKEN_URL} returned no access_token."
