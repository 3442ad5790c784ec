"""Inbound auth as a filter: API keys, Basic, JWT; credentials stripped; identity passed upstream."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest

from app.config.hashing import hash_api_key, hash_password
from app.config.settings import Settings
from app.edge.auth import AuthFilter, BasicVerifier, build_verifier
from app.edge.tokens import JwtVerifier
from app.errors import Forbidden, Unauthorized, UpstreamError
from app.outbound.clients import make_client
from app.outbound.urls import exact_url
from app.proxy.exchange import Exchange
from app.proxy.routing import CompiledRoute
from tests.keys import ec_key

pytestmark = pytest.mark.anyio

UPSTREAM = httpx.URL("http://127.0.0.1:9")
SECRET = "a-shared-hmac-secret-of-32-bytes!!"
API_KEY_CHALLENGE = b'ApiKey realm="gatehouse", header="X-API-Key"'
BASIC_CHALLENGE = b'Basic realm="gatehouse", charset="UTF-8"'
# A low iteration count keeps PBKDF2 fast; the verifier reads the count from the hash.
ALICE_HASH = hash_password("correct horse", iterations=1000)


def compile_route(auth):
    settings = Settings(routes=[{"name": "api", "prefix": "/api", "upstream": str(UPSTREAM), "auth": auth}])
    return CompiledRoute.compile(settings.routes[0], settings.timeout, *settings.policies_for(settings.routes[0]))


def no_http():
    raise AssertionError("this verifier must not fetch anything")


def auth_filter(auth, http=no_http):
    route = compile_route(auth)
    spec = route.edge.auth
    return route, AuthFilter(spec, build_verifier(spec, http))


def exchange_for(route, headers=(), path="/users", query=None):
    return Exchange(route, "GET", exact_url(UPSTREAM, path, query), list(headers), client_ip="203.0.113.7")


class Upstream:
    """The next handler: records what would go upstream."""

    def __init__(self):
        self.seen = []

    async def __call__(self, exchange):
        self.seen.append((list(exchange.headers), exchange.url.raw_path, exchange.identity))
        return httpx.Response(200)


def api_key_auth(**options):
    return {"type": "api_key", "keys": {"mobile": hash_api_key("k-mobile"), "web": hash_api_key("k-web")}, **options}


def basic_header(user, password):
    return (b"authorization", b"Basic " + base64.b64encode(f"{user}:{password}".encode()))


def hs_token(**claims):
    now = int(time.time())
    payload = {"sub": "alice", "aud": "gatehouse", "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET, algorithm="HS256")


def jwt_auth(**options):
    return {"type": "jwt", "algorithms": ["HS256"], "secret": SECRET, "audience": "gatehouse", **options}


def bearer(token):
    return (b"authorization", f"Bearer {token}".encode())


# API keys


async def test_api_key_in_header_names_the_caller_and_is_stripped():
    route, f = auth_filter(api_key_auth())
    upstream = Upstream()
    response = await f(exchange_for(route, [(b"x-api-key", b"k-web"), (b"accept", b"*/*")]), upstream)
    assert response.status_code == 200
    assert upstream.seen == [([(b"accept", b"*/*")], b"/users", "web")]


async def test_api_key_in_query_is_stripped_byte_for_byte_leaving_other_params_alone():
    route, f = auth_filter(api_key_auth(header=None, query_param="api_key"))
    upstream = Upstream()
    query = "a=1&api_key=k-mobile&b=x|y%2F{z}&c&d=%zz"
    await f(exchange_for(route, [(b"accept", b"*/*")], path="/us|ers", query=query), upstream)
    assert upstream.seen == [([(b"accept", b"*/*")], b"/us|ers?a=1&b=x|y%2F{z}&c&d=%zz", "mobile")]


async def test_api_key_as_the_only_query_param_leaves_no_question_mark():
    route, f = auth_filter(api_key_auth(header=None, query_param="api_key"))
    upstream = Upstream()
    await f(exchange_for(route, query="api_key=k-web"), upstream)
    assert upstream.seen == [([], b"/users", "web")]


async def test_percent_encoded_query_param_name_is_found_and_stripped():
    route, f = auth_filter(api_key_auth(header=None, query_param="api_key"))
    upstream = Upstream()
    await f(exchange_for(route, query="x=1&api%5Fkey=k-web"), upstream)
    assert upstream.seen == [([], b"/users?x=1", "web")]


async def test_header_key_wins_over_query_key_when_both_are_configured():
    route, f = auth_filter(api_key_auth(query_param="api_key"))
    upstream = Upstream()
    await f(exchange_for(route, [(b"x-api-key", b"k-web")], query="api_key=k-mobile&q=1"), upstream)
    assert upstream.seen == [([], b"/users?q=1", "web")]


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ([], "An API key is required."),
        ([(b"x-api-key", b"")], "An API key is required."),
        ([(b"x-api-key", b"k-wrong")], "The API key is not valid."),
        ([(b"x-api-key", hash_api_key("k-web").encode())], "The API key is not valid."),
    ],
    ids=["missing", "empty", "wrong", "the-hash-itself"],
)
async def test_missing_or_wrong_api_key_is_unauthorized_with_a_challenge(headers, detail):
    route, f = auth_filter(api_key_auth())
    upstream = Upstream()
    with pytest.raises(Unauthorized) as raised:
        await f(exchange_for(route, headers), upstream)
    assert raised.value.status == 401
    assert raised.value.detail == detail
    assert raised.value.headers == [(b"www-authenticate", API_KEY_CHALLENGE)]
    assert upstream.seen == []


async def test_query_only_api_key_challenge_names_the_param():
    route, f = auth_filter(api_key_auth(header=None, query_param="token"))
    with pytest.raises(Unauthorized) as raised:
        await f(exchange_for(route, query="token=nope"), Upstream())
    assert raised.value.headers == [(b"www-authenticate", b'ApiKey realm="gatehouse", query="token"')]


async def test_forward_credentials_keeps_header_and_query_param():
    route, f = auth_filter(api_key_auth(query_param="api_key", forward_credentials=True))
    upstream = Upstream()
    await f(exchange_for(route, [(b"x-api-key", b"k-web")], query="api_key=k-mobile&q=|"), upstream)
    assert upstream.seen == [([(b"x-api-key", b"k-web")], b"/users?api_key=k-mobile&q=|", "web")]


async def test_client_sent_identity_header_is_dropped_and_replaced_by_the_gateways():
    route, f = auth_filter(api_key_auth(identity_header="X-Gatehouse-Identity"))
    upstream = Upstream()
    headers = [(b"x-gatehouse-identity", b"admin"), (b"x-api-key", b"k-mobile"), (b"x-gatehouse-identity", b"root")]
    await f(exchange_for(route, headers), upstream)
    assert upstream.seen == [([(b"x-gatehouse-identity", b"mobile")], b"/users", "mobile")]


async def test_identity_header_is_dropped_even_when_credentials_are_forwarded():
    route, f = auth_filter(api_key_auth(identity_header="X-Gatehouse-Identity", forward_credentials=True))
    upstream = Upstream()
    await f(exchange_for(route, [(b"x-gatehouse-identity", b"admin"), (b"x-api-key", b"k-web")]), upstream)
    assert upstream.seen == [([(b"x-api-key", b"k-web"), (b"x-gatehouse-identity", b"web")], b"/users", "web")]


# Basic


async def test_basic_good_credentials_name_the_user_and_are_stripped():
    route, f = auth_filter({"type": "basic", "users": {"alice": ALICE_HASH}, "identity_header": "X-User"})
    upstream = Upstream()
    await f(exchange_for(route, [basic_header("alice", "correct horse"), (b"accept", b"*/*")]), upstream)
    assert upstream.seen == [([(b"accept", b"*/*"), (b"x-user", b"alice")], b"/users", "alice")]


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (basic_header("alice", "wrong"), "The user name or password is not valid."),
        (basic_header("mallory", "correct horse"), "The user name or password is not valid."),
        ((b"authorization", b"Basic !!!not-base64"), "The Basic credentials are malformed."),
        ((b"authorization", b"Basic " + base64.b64encode(b"alice")), "The Basic credentials are malformed."),
        ((b"authorization", b"Bearer abc"), "Basic credentials are required."),
        (None, "Basic credentials are required."),
    ],
    ids=["bad-password", "unknown-user", "not-base64", "no-colon", "other-scheme", "missing"],
)
async def test_basic_bad_or_malformed_credentials_are_unauthorized(header, detail):
    route, f = auth_filter({"type": "basic", "users": {"alice": ALICE_HASH}})
    upstream = Upstream()
    with pytest.raises(Unauthorized) as raised:
        await f(exchange_for(route, [header] if header else []), upstream)
    assert raised.value.detail == detail
    assert raised.value.headers == [(b"www-authenticate", BASIC_CHALLENGE)]
    assert upstream.seen == []


async def test_basic_scheme_name_is_case_insensitive_and_realm_is_configurable():
    route, f = auth_filter({"type": "basic", "realm": "staff", "users": {"alice": ALICE_HASH}})
    upstream = Upstream()
    encoded = base64.b64encode(b"alice:correct horse")
    await f(exchange_for(route, [(b"authorization", b"bAsIc " + encoded)]), upstream)
    assert upstream.seen[0][2] == "alice"
    with pytest.raises(Unauthorized) as raised:
        await f(exchange_for(route), upstream)
    assert raised.value.headers == [(b"www-authenticate", b'Basic realm="staff", charset="UTF-8"')]


async def test_basic_remembers_a_verified_pair_but_not_a_wrong_one(monkeypatch):
    import app.edge.auth as auth_module

    calls = []
    real = auth_module.verify_password

    def counting(password, stored):
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(auth_module, "verify_password", counting)
    route = compile_route({"type": "basic", "users": {"alice": ALICE_HASH}})
    verifier = BasicVerifier(route.edge.auth)
    good = exchange_for(route, [basic_header("alice", "correct horse")])
    assert [await verifier.verify(good), await verifier.verify(good)] == ["alice", "alice"]
    assert calls == [b"correct horse"]
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await verifier.verify(exchange_for(route, [basic_header("alice", "nope")]))
    assert calls == [b"correct horse", b"nope", b"nope"]


# JWT (HS256 with a shared secret)


async def test_jwt_good_token_names_the_subject_and_is_stripped():
    route, f = auth_filter(jwt_auth(identity_header="X-Subject"))
    upstream = Upstream()
    await f(exchange_for(route, [bearer(hs_token(sub="user-42")), (b"accept", b"*/*")]), upstream)
    assert upstream.seen == [([(b"accept", b"*/*"), (b"x-subject", b"user-42")], b"/users", "user-42")]


async def test_jwt_identity_outside_printable_ascii_is_percent_encoded_in_the_header():
    route, f = auth_filter(jwt_auth(identity_header="X-Subject"))
    upstream = Upstream()
    await f(exchange_for(route, [bearer(hs_token(sub="jörg\r\nx-admin: 1%"))]), upstream)
    assert upstream.seen == [([(b"x-subject", b"j%C3%B6rg%0D%0Ax-admin: 1%25")], b"/users", "jörg\r\nx-admin: 1%")]


@pytest.mark.parametrize(
    ("make_token", "description"),
    # Tokens are made when the test runs, not at collection: a long suite would expire them first.
    [
        (lambda: hs_token(exp=int(time.time()) - 120), "token expired"),
        (lambda: hs_token(aud="someone-else"), "invalid token"),
        (lambda: hs_token(aud=None), "invalid token"),
        (lambda: hs_token(exp=None), "invalid token"),
        (lambda: jwt.encode({"sub": "a", "aud": "gatehouse", "exp": int(time.time()) + 60}, "x" * 32), "invalid token"),
        (lambda: "not.a.jwt", "malformed token"),
    ],
    ids=["expired", "wrong-audience", "no-audience", "no-exp", "wrong-secret", "malformed"],
)
async def test_jwt_invalid_tokens_are_unauthorized_with_the_reason_in_the_challenge(make_token, description):
    route, f = auth_filter(jwt_auth())
    upstream = Upstream()
    with pytest.raises(Unauthorized) as raised:
        await f(exchange_for(route, [bearer(make_token())]), upstream)
    challenge = f'Bearer realm="gatehouse", error="invalid_token", error_description="{description}"'
    assert raised.value.headers == [(b"www-authenticate", challenge.encode())]
    assert upstream.seen == []


async def test_jwt_expired_within_leeway_is_still_accepted():
    route, f = auth_filter(jwt_auth(leeway=60))
    upstream = Upstream()
    await f(exchange_for(route, [bearer(hs_token(exp=int(time.time()) - 10))]), upstream)
    assert upstream.seen[0][2] == "alice"


@pytest.mark.parametrize(
    "header",
    [None, (b"authorization", b"Basic YTpi"), (b"authorization", b"Bearer   ")],
    ids=["missing", "other-scheme", "empty-token"],
)
async def test_jwt_missing_bearer_token_gets_the_bare_challenge(header):
    route, f = auth_filter(jwt_auth())
    with pytest.raises(Unauthorized) as raised:
        await f(exchange_for(route, [header] if header else []), Upstream())
    assert raised.value.detail == "A bearer token is required."
    assert raised.value.headers == [(b"www-authenticate", b'Bearer realm="gatehouse"')]


async def test_jwt_algorithm_none_is_refused():
    route, f = auth_filter(jwt_auth())
    token = jwt.encode({"sub": "a", "aud": "gatehouse", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(Unauthorized) as raised:
        await f(exchange_for(route, [bearer(token)]), Upstream())
    assert raised.value.detail == "The token's algorithm 'none' is not accepted."


async def test_jwt_missing_scope_is_forbidden_naming_the_needed_scopes():
    route, f = auth_filter(jwt_auth(required_scopes=["orders:write", "orders:read"]))
    upstream = Upstream()
    with pytest.raises(Forbidden) as raised:
        await f(exchange_for(route, [bearer(hs_token(scope="orders:read profile"))]), upstream)
    assert raised.value.status == 403
    assert raised.value.detail == "The token lacks the scope(s) orders:write."
    challenge = b'Bearer realm="gatehouse", error="insufficient_scope", scope="orders:read orders:write"'
    assert raised.value.headers == [(b"www-authenticate", challenge)]
    assert upstream.seen == []


@pytest.mark.parametrize(
    "claims",
    [{"scope": "profile orders:read orders:write"}, {"scp": ["orders:write", "orders:read"]}],
    ids=["scope-string", "scp-list"],
)
async def test_jwt_with_every_required_scope_passes(claims):
    route, f = auth_filter(jwt_auth(required_scopes=["orders:write", "orders:read"]))
    upstream = Upstream()
    await f(exchange_for(route, [bearer(hs_token(**claims))]), upstream)
    assert upstream.seen == [([], b"/users", "alice")]


async def test_jwt_without_the_identity_claim_is_unauthorized():
    route, f = auth_filter(jwt_auth())
    with pytest.raises(Unauthorized) as raised:
        await f(exchange_for(route, [bearer(hs_token(sub=None))]), Upstream())
    assert raised.value.detail == "The token has no 'sub' claim."


# JWT from a JWKS (fetched through a MockTransport, no sockets)


class Jwks:
    def __init__(self, *keys):
        self.keys = list(keys)
        self.fetches = 0

    def __call__(self, request):
        assert request.url == "https://idp.test/jwks.json"
        self.fetches += 1
        return httpx.Response(200, json={"keys": [k.jwk() for k in self.keys]})


def jwks_verifier(http, **options):
    spec = {"type": "jwt", "algorithms": ["ES256"], "jwks_url": "https://idp.test/jwks.json", "audience": "gh"}
    return JwtVerifier(compile_route({**spec, **options}).edge.auth, lambda: http)


def signed(key, sub, kid="default"):
    token = key.sign({"sub": sub, "aud": "gh", "exp": int(time.time()) + 60}, kid=kid)
    return exchange_for(compile_route(jwt_auth()), [bearer(token)])


async def test_jwks_is_fetched_once_and_an_unknown_kid_refetches_for_rotated_keys():
    old, new = ec_key("old"), ec_key("new")
    jwks = Jwks(old)
    async with make_client(timeout=httpx.Timeout(5), transport=httpx.MockTransport(jwks)) as http:
        verifier = jwks_verifier(http, jwks_min_refresh_seconds=0)
        assert await verifier.verify(signed(old, "a")) == "a"
        assert await verifier.verify(signed(old, "b")) == "b"
        assert jwks.fetches == 1
        jwks.keys.append(new)
        assert await verifier.verify(signed(new, "c")) == "c"
        assert jwks.fetches == 2


async def test_jwks_unknown_kids_refetch_at_most_every_min_refresh_seconds():
    key, stranger = ec_key("k"), ec_key("junk")
    jwks = Jwks(key)
    async with make_client(timeout=httpx.Timeout(5), transport=httpx.MockTransport(jwks)) as http:
        verifier = jwks_verifier(http)  # jwks_min_refresh_seconds: 10
        assert await verifier.verify(signed(key, "a")) == "a"
        for _ in range(3):
            with pytest.raises(Unauthorized) as raised:
                await verifier.verify(signed(stranger, "x"))
            assert raised.value.detail == "No known key has the token's kid 'junk'."
        assert jwks.fetches == 1


async def test_jwks_token_signed_by_an_unlisted_key_with_a_listed_kid_is_refused():
    listed, impostor = ec_key("k"), ec_key("k")
    async with make_client(timeout=httpx.Timeout(5), transport=httpx.MockTransport(Jwks(listed))) as http:
        with pytest.raises(Unauthorized) as raised:
            await jwks_verifier(http).verify(signed(impostor, "a"))
    assert raised.value.detail == "The token is not valid: Signature verification failed."


async def test_jwks_unreachable_with_no_cached_keys_is_an_upstream_error():
    def down(request):  # noqa: ARG001
        return httpx.Response(500, content=json.dumps({"error": "down"}))

    async with make_client(timeout=httpx.Timeout(5), transport=httpx.MockTransport(down)) as http:
        route, f = auth_filter(
            {"type": "jwt", "algorithms": ["ES256"], "jwks_url": "https://idp.test/jwks.json"}, lambda: http
        )
        token = ec_key("k").sign({"sub": "a", "exp": int(time.time()) + 60})
        with pytest.raises(UpstreamError) as raised:
            await f(exchange_for(route, [bearer(token)]), Upstream())
    assert raised.value.status == 502
    assert raised.value.detail == "The JWKS at https://idp.test/jwks.json could not be fetched."
