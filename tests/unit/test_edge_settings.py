import logging

import pytest

from app.config.hashing import hash_api_key, hash_password, parse_password_hash, verify_password
from app.config.settings import ConfigError, Settings
from app.observability.logging import RedactingFormatter, logging_config

ROUTE = {"name": "users", "prefix": "/api/users", "upstream": "http://users:8000"}
KEYS = {"app": hash_api_key("k")}


def test_routes_inherit_top_level_edge_defaults_and_false_turns_them_off():
    settings = Settings(
        auth={"type": "api_key", "keys": KEYS},
        rate_limit={"limit": "10/second"},
        routes=[ROUTE, {**ROUTE, "name": "open", "prefix": "/open", "auth": False, "rate_limit": {"limit": "1/hour"}}],
    )
    (_, inherited), (_, opened) = (settings.policies_for(route) for route in settings.routes)
    assert inherited.auth is not None and inherited.auth.type == "api_key"
    assert inherited.rate_limit.limit == "10/second"
    assert opened.auth is None and opened.rate_limit.limit == "1/hour"


def test_a_top_level_false_is_the_same_as_no_default():
    settings = Settings(auth=False, cors=False, routes=[ROUTE])
    _, edge = settings.policies_for(settings.routes[0])
    assert edge.auth is None and edge.cors is None and edge.rate_limit is None


@pytest.mark.parametrize(
    ("edge", "message"),
    [
        ({"auth": {"type": "api_key", "keys": {"app": "plain-text-key"}}}, "-> auth.api_key.keys: key 'app'"),
        ({"auth": {"type": "basic", "users": {"u": "hunter2"}}}, "-> auth.basic.users: user 'u'"),
        ({"auth": {"type": "jwt"}}, "-> auth.jwt: set exactly one of secret, public_key, jwks_url"),
        ({"auth": {"type": "jwt", "secret": "s", "algorithms": ["RS256"]}}, "secret works with HS256 only"),
        ({"auth": {"type": "oauth"}}, "-> auth: Input tag 'oauth'"),
        ({"rate_limit": {"limit": "lots"}}, "-> rate_limit.limit: not a rate limit"),
        ({"rate_limit": {"limit": "1/second", "key": "cookie"}}, "-> rate_limit.key: must be ip"),
        ({"rate_limit": {"limit": "1/second", "key": "subject"}}, "-> rate_limit.key: 'subject' needs auth"),
        ({"cors": {"allow_origins": ["*"], "allow_credentials": True}}, "-> cors: allow_credentials cannot"),
        ({"cors": {"allow_origins": ["http://a.test/path"]}}, "-> cors.allow_origins: 'http://a.test/path'"),
        ({"upstream_auth": {"type": "bearer", "token_env": "GATEHOUSE_TEST_UNSET"}}, "GATEHOUSE_TEST_UNSET is not set"),
        ({"upstream_auth": {"type": "hmac"}}, "set exactly one of secret or secret_env"),
    ],
)
def test_invalid_edge_settings_name_the_route_and_field(edge, message):
    with pytest.raises(ConfigError) as caught:
        Settings(routes=[ROUTE, {**ROUTE, "name": "bad", "prefix": "/bad", **edge}])
    assert "routes[1] 'bad'" in str(caught.value)
    assert message in str(caught.value)


def test_secrets_never_print():
    settings = Settings(
        redis_url="redis://:redis-pass@127.0.0.1:6379/0",
        routes=[
            {
                **ROUTE,
                "auth": {"type": "jwt", "secret": "jwt-secret", "algorithms": ["HS256"]},
                "upstream_auth": {"type": "basic", "username": "svc", "password": "upstream-pass"},
            }
        ],
    )
    text = repr(settings) + str(settings.model_dump())
    for secret in ("redis-pass", "jwt-secret", "upstream-pass"):
        assert secret not in text


def test_password_hashes_verify_only_the_right_password():
    stored = parse_password_hash(hash_password("s3cret", iterations=1000))
    assert verify_password(b"s3cret", stored)
    assert not verify_password(b"s3cret ", stored)


def _format(formatter, message, *args):
    return formatter.format(logging.LogRecord("gatehouse", logging.INFO, __file__, 1, message, args, None))


@pytest.mark.parametrize(
    ("message", "args", "secret"),
    [
        ("headers %s", ([(b"authorization", b"Bearer abc.def.ghi")],), "abc.def.ghi"),
        ("Authorization: %s", ("Basic dXNlcjpwYXNz",), "dXNlcjpwYXNz"),
        ("cookie=%s", ("session=s3cr3t",), "s3cr3t"),
        ("got %s", ({"X-API-Key": "key-for-batch"},), "key-for-batch"),
        ("GET %s", ("/api/x?a=1&access_token=tok123&b=2",), "tok123"),
        ("GET %s", ("/api/x?sig=abc&my_key=qqq",), "qqq"),
        ("token %s", ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl",), "c2lnbmF0dXJl"),
    ],
)
def test_log_lines_never_carry_secrets(message, args, secret):
    formatter = RedactingFormatter(query_params=["access_token", "my_key"])
    line = _format(formatter, message, *args)
    assert secret not in line
    assert "[REDACTED]" in line


def test_redaction_covers_tracebacks_and_configured_names():
    settings = Settings(
        redact_query_params=["sig"],
        routes=[{**ROUTE, "auth": {"type": "api_key", "header": "X-Team-Key", "query_param": "k", "keys": KEYS}}],
    )
    config = logging_config(settings, root=False)
    options = config["formatters"]["redacting"]
    formatter = RedactingFormatter(headers=options["headers"], query_params=options["query_params"])
    try:
        raise ValueError("bad request x-team-key: hunter2 to /p?k=zzz&sig=yyy")
    except ValueError:
        import sys

        record = logging.LogRecord("gatehouse", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = formatter.format(record)
    assert "ValueError" in line
    for secret in ("hunter2", "zzz", "yyy"):
        assert secret not in line
