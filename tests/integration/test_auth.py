"""Inbound auth on real sockets: who gets through, what the upstream sees, and what the refused get."""

from __future__ import annotations

import base64
import time

import anyio
import httpx
import pytest

from app.config.hashing import hash_api_key, hash_password
from tests.gateway import route, run_gateway
from tests.keys import HS_SECRET, JwksServer, claims, ec_key, hs_token, rsa_key
from tests.servers import run_uvicorn

pytestmark = pytest.mark.anyio

API_KEYS = {"mobile-app": hash_api_key("key-for-mobile"), "batch": hash_api_key("key-for-batch")}
RSA = rsa_key("rsa-1")


def api_key_route(upstream_url, **auth):
    spec = {"type": "api_key", "keys": API_KEYS, "identity_header": "X-Caller", **auth}
    return route("api", "/api", upstream_url, auth=spec)


def jwt_route(upstream_url, **auth):
    spec = {
        "type": "jwt",
        "algorithms": ["HS256"],
        "secret": HS_SECRET,
        "issuer": "https://issuer.test",
        "audience": "gatehouse",
        "identity_header": "X-Caller",
        **auth,
    }
    return route("api", "/api", upstream_url, auth=spec)


def upstream_headers(response):
    return {name: value for name, value in response.json()["headers"]}


def assert_refused(response, status, challenge_prefix):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith(challenge_prefix)


# --- api_key ---------------------------------------------------------------


async def test_api_key_in_header_is_accepted_removed_and_named_upstream(upstream):
    server, stats = upstream
    async with run_gateway(api_key_route(server.url)) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/api/echo/x", headers={"x-api-key": "key-for-batch", "x-caller": "root"})
    assert response.status_code == 200
    seen = upstream_headers(response)
    assert "x-api-key" not in seen
    assert seen["x-caller"] == "batch"  # the gateway's, not the client's spoofed value
    assert stats.requests["/echo/x"] == 1


async def test_api_key_in_query_param_is_removed_and_the_rest_of_the_query_kept(upstream):
    server, _ = upstream
    async with (
        run_gateway(api_key_route(server.url, header=None, query_param="api_key")) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        response = await client.get("/api/echo/x?a=1&api_key=key-for-mobile&b=%7C")
    assert response.status_code == 200
    assert response.json()["query_string"] == "a=1&b=%7C"
    assert upstream_headers(response)["x-caller"] == "mobile-app"


async def test_api_key_is_forwarded_when_forward_credentials_is_set(upstream):
    server, _ = upstream
    async with (
        run_gateway(api_key_route(server.url, forward_credentials=True)) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        response = await client.get("/api/echo/x", headers={"x-api-key": "key-for-batch"})
    assert upstream_headers(response)["x-api-key"] == "key-for-batch"


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-api-key": ""}, {"x-api-key": "key-for-mobilE"}, {"x-api-key": hash_api_key("key-for-batch")}],
    ids=["missing", "empty", "wrong", "the-hash-itself"],
)
async def test_missing_or_wrong_api_key_is_401_and_never_reaches_the_upstream(upstream, headers):
    server, stats = upstream
    async with run_gateway(api_key_route(server.url)) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/api/echo/x", headers=headers)
    assert_refused(response, 401, 'ApiKey realm="gatehouse", header="X-API-Key"')
    assert stats.requests["/echo/x"] == 0


# --- jwt -------------------------------------------------------------------


async def test_valid_hs256_token_passes_with_its_subject_and_without_the_authorization_header(upstream):
    server, _ = upstream
    async with run_gateway(jwt_route(server.url)) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/api/echo/x", headers={"authorization": f"Bearer {hs_token()}"})
    assert response.status_code == 200
    seen = upstream_headers(response)
    assert seen["x-caller"] == "alice"
    assert "authorization" not in seen


def _other_secret_token():
    import jwt

    return jwt.encode(claims(), "another-secret-that-is-32-bytes-long", algorithm="HS256")


def _none_alg_token():
    import jwt

    return jwt.encode(claims(), None, algorithm="none")


@pytest.mark.parametrize(
    ("authorization", "description"),
    [
        (lambda: None, None),
        (lambda: "Basic YTpi", None),
        (lambda: "Bearer not-a-jwt", "malformed token"),
        (lambda: "Bearer " + hs_token(exp=int(time.time()) - 120), "token expired"),
        (lambda: "Bearer " + hs_token(aud="someone-else"), "invalid token"),
        (lambda: "Bearer " + hs_token(iss="https://evil.test"), "invalid token"),
        (lambda: "Bearer " + hs_token(nbf=int(time.time()) + 600), "invalid token"),
        (lambda: "Bearer " + hs_token(exp=None), "invalid token"),
        (lambda: "Bearer " + _other_secret_token(), "invalid token"),
        (lambda: "Bearer " + _none_alg_token(), "algorithm not accepted"),
        (lambda: "Bearer " + RSA.sign(claims()), "algorithm not accepted"),
    ],
    ids=[
        "missing",
        "other-scheme",
        "malformed",
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "not-yet-valid",
        "no-exp",
        "wrong-key",
        "alg-none",
        "rs256-on-an-hs256-route",
    ],
)
async def test_bad_jwt_is_401_with_a_bearer_challenge_and_never_reaches_the_upstream(
    upstream, authorization, description
):
    # Tokens are made when the test runs: made at collection, a long suite lets them expire.
    server, stats = upstream
    value = authorization()
    headers = {"authorization": value} if value else {}
    async with run_gateway(jwt_route(server.url)) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/api/echo/x", headers=headers)
    assert_refused(response, 401, 'Bearer realm="gatehouse"')
    if description:
        assert f'error_description="{description}"' in response.headers["www-authenticate"]
    else:
        assert "error=" not in response.headers["www-authenticate"]
    assert stats.requests["/echo/x"] == 0


async def test_expiry_within_the_leeway_is_accepted(upstream):
    server, _ = upstream
    token = hs_token(exp=int(time.time()) - 10)
    async with run_gateway(jwt_route(server.url, leeway=60)) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/api/echo/x", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_missing_scope_is_403_insufficient_scope_and_granted_scope_passes(upstream):
    server, stats = upstream
    spec = jwt_route(server.url, required_scopes=["orders:write"], required_claims=["tenant"])
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        denied = await client.get(
            "/api/echo/x", headers={"authorization": f"Bearer {hs_token(scope='orders:read', tenant='t1')}"}
        )
        no_claim = await client.get(
            "/api/echo/x", headers={"authorization": f"Bearer {hs_token(scope='orders:write')}"}
        )
        allowed = await client.get(
            "/api/echo/x",
            headers={"authorization": f"Bearer {hs_token(scope='orders:read orders:write', tenant='t1')}"},
        )
    assert_refused(denied, 403, 'Bearer realm="gatehouse", error="insufficient_scope", scope="orders:write"')
    assert_refused(no_claim, 401, "Bearer")
    assert allowed.status_code == 200
    assert stats.requests["/echo/x"] == 1


async def test_rs256_with_a_configured_public_key(upstream):
    server, _ = upstream
    spec = jwt_route(server.url, algorithms=["RS256"], secret=None, public_key=RSA.public_pem)
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        good = await client.get("/api/echo/x", headers={"authorization": f"Bearer {RSA.sign(claims())}"})
        forged = await client.get("/api/echo/x", headers={"authorization": f"Bearer {rsa_key('other').sign(claims())}"})
    assert good.status_code == 200
    assert_refused(forged, 401, "Bearer")


async def test_jwks_keys_are_cached_and_a_rotated_kid_is_accepted_without_restart(upstream):
    server, stats = upstream
    first, second = ec_key("ec-1"), ec_key("ec-2")
    jwks = JwksServer(keys=[first])
    async with run_uvicorn(jwks, log_level="warning") as key_server:
        spec = jwt_route(
            server.url,
            algorithms=["ES256", "RS256"],
            secret=None,
            jwks_url=f"{key_server.url}/jwks.json",
            jwks_min_refresh_seconds=0.2,
        )
        async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
            for _ in range(3):
                response = await client.get("/api/echo/x", headers={"authorization": f"Bearer {first.sign(claims())}"})
                assert response.status_code == 200
            assert jwks.fetches == 1  # cached

            jwks.keys = [second]  # the issuer rotates: a new kid appears
            await anyio.sleep(0.3)  # past jwks_min_refresh_seconds since the first fetch
            rotated = await client.get("/api/echo/x", headers={"authorization": f"Bearer {second.sign(claims())}"})
            assert rotated.status_code == 200
            assert jwks.fetches == 2

            # Unknown kids do not make the gateway refetch on every request.
            for _ in range(5):
                junk = await client.get(
                    "/api/echo/x", headers={"authorization": f"Bearer {second.sign(claims(), kid='nope')}"}
                )
                assert_refused(junk, 401, "Bearer")
            assert jwks.fetches <= 3
    assert stats.requests["/echo/x"] == 4


async def test_unreachable_jwks_is_a_502_not_a_401(upstream):
    server, stats = upstream
    spec = jwt_route(server.url, algorithms=["ES256"], secret=None, jwks_url="http://127.0.0.1:9/jwks.json")
    async with run_gateway(spec) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/api/echo/x", headers={"authorization": f"Bearer {ec_key('k').sign(claims())}"})
    assert response.status_code == 502
    assert stats.requests["/echo/x"] == 0


# --- basic -----------------------------------------------------------------


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def basic_route(upstream_url):
    users = {"ops": hash_password("correct horse", iterations=1000)}
    spec = {"type": "basic", "realm": "internal", "users": users, "identity_header": "X-Caller"}
    return route("api", "/api", upstream_url, auth=spec)


async def test_basic_auth_accepts_the_right_password_and_names_the_user(upstream):
    server, _ = upstream
    async with run_gateway(basic_route(server.url)) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        for _ in range(2):  # the second answer comes from the verified-pair cache
            response = await client.get("/api/echo/x", headers={"authorization": basic("ops", "correct horse")})
            assert response.status_code == 200
            seen = upstream_headers(response)
            assert seen["x-caller"] == "ops"
            assert "authorization" not in seen


@pytest.mark.parametrize(
    "authorization",
    [None, basic("ops", "wrong"), basic("nobody", "correct horse"), "Basic !!!not-base64", "Basic " + "b3Bz"],
    ids=["missing", "wrong-password", "unknown-user", "malformed", "no-colon"],
)
async def test_bad_basic_credentials_are_401_with_the_realm(upstream, authorization):
    server, stats = upstream
    headers = {"authorization": authorization} if authorization else {}
    async with run_gateway(basic_route(server.url)) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        response = await client.get("/api/echo/x", headers=headers)
    assert_refused(response, 401, 'Basic realm="internal", charset="UTF-8"')
    assert stats.requests["/echo/x"] == 0


async def test_routes_without_auth_and_auth_false_are_open_while_the_default_applies_elsewhere(upstream):
    server, _ = upstream
    default = {"type": "api_key", "keys": API_KEYS}
    async with (
        run_gateway(
            route("locked", "/locked", server.url), route("open", "/open", server.url, auth=False), auth=default
        ) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        assert (await client.get("/locked/echo/x")).status_code == 401
        assert (await client.get("/open/echo/x")).status_code == 200
