import json

import pytest

from app.config.settings import ConfigError, Settings, load_settings

ROUTE = {"name": "users", "prefix": "/api/users", "upstream": "http://users:8000/v1"}


def test_defaults_match_the_documented_contract():
    settings = Settings()
    assert settings.timeout.model_dump() == {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 5.0}
    assert settings.ops_prefix == "/_gatehouse"
    assert settings.trusted_proxies == []
    assert settings.routes == []
    route = Settings(routes=[ROUTE]).routes[0]
    assert route.strip_prefix is True and route.preserve_host is False and route.http2 is False
    assert route.methods is None and route.max_body_bytes is None


def test_yaml_file_is_read_and_environment_overrides_it(tmp_path, monkeypatch):
    config = tmp_path / "gatehouse.yaml"
    config.write_text(
        "timeout:\n  connect: 2\n  read: 3\nroutes:\n  - name: a\n    prefix: /a\n    upstream: http://a\n"
    )
    monkeypatch.setenv("GATEHOUSE_CONFIG", str(config))
    monkeypatch.setenv("GATEHOUSE_TIMEOUT__READ", "9")
    monkeypatch.setenv("GATEHOUSE_TRUSTED_PROXIES", '["10.0.0.0/8"]')
    settings = load_settings()
    assert settings.timeout.connect == 2 and settings.timeout.read == 9
    assert settings.routes[0].name == "a"
    assert str(settings.trusted_proxies[0]) == "10.0.0.0/8"


def test_json_file_works_too(tmp_path):
    config = tmp_path / "gatehouse.json"
    config.write_text(json.dumps({"routes": [ROUTE], "log_level": "DEBUG"}))
    settings = load_settings(config)
    assert settings.routes[0].upstream == "http://users:8000/v1"
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({**ROUTE, "upstream": "ftp://x"}, "routes[0] 'users' -> upstream: must be an http"),
        ({**ROUTE, "prefix": "api"}, "routes[0] 'users' -> prefix: must start with '/'"),
        ({**ROUTE, "prefix": "/api/"}, "routes[0] 'users' -> prefix: must not end with '/'"),
        ({**ROUTE, "timeout": {"read": 0}}, "routes[0] 'users' -> timeout.read: Input should be greater than 0"),
        ({**ROUTE, "methods": ["GET", "BAD METHOD"]}, "routes[0] 'users' -> methods"),
        ({**ROUTE, "max_body_bytes": -1}, "routes[0] 'users' -> max_body_bytes"),
        ({**ROUTE, "stip_prefix": True}, "routes[0] 'users' -> stip_prefix: Extra inputs are not permitted"),
        ({**ROUTE, "request_headers": {"set": {"X-A": "a\r\nb"}}}, "request_headers.set"),
        ({**ROUTE, "verify": "/no/such/ca.pem"}, "does not exist"),
    ],
)
def test_invalid_route_fails_naming_route_and_field(route, expected):
    with pytest.raises(ConfigError) as caught:
        Settings(routes=[route])
    assert expected in str(caught.value)


def test_duplicate_names_and_prefixes_are_errors():
    with pytest.raises(ConfigError) as caught:
        Settings(routes=[ROUTE, {**ROUTE, "prefix": "/other"}, {**ROUTE, "name": "other"}])
    message = str(caught.value)
    assert "routes[1] 'users' -> name: duplicate of routes[0]" in message
    assert "routes[2] 'other' -> prefix: '/api/users' is already used by routes[0]" in message


def test_route_inside_ops_prefix_is_an_error():
    with pytest.raises(ConfigError, match="inside ops_prefix"):
        Settings(routes=[{**ROUTE, "prefix": "/_gatehouse/x"}])


def test_unreadable_or_malformed_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def test_dotenv_keys_that_are_not_settings_are_ignored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("GATEHOUSE_LOG_LEVEL=debug\nCOMPOSE_PROJECT_NAME=gh\nGATEHOUSE_NOT_A_SETTING=1\n")
    assert Settings().log_level == "debug"


def _error(**route):
    with pytest.raises(ConfigError) as info:
        Settings(routes=[{"name": "users", "prefix": "/api/users", "upstream": "http://users", **route}])
    return str(info.value)


def test_upstream_may_be_a_list_of_weighted_targets_or_plain_urls():
    route = Settings(routes=[{**ROUTE, "upstream": ["http://a:1/v1", {"url": "http://b:2/v1/", "weight": 3}]}]).routes[
        0
    ]
    assert [(t.url, t.weight) for t in route.target_list] == [("http://a:1/v1", 1), ("http://b:2/v1", 3)]


def test_bad_targets_name_the_route_and_the_target_field():
    assert "routes[0] 'users' -> upstream[1].url: must be an http:// or https:// URL" in _error(
        upstream=["http://a", {"url": "ftp://b"}]
    )
    assert "routes[0] 'users' -> upstream[0].weight:" in _error(upstream=[{"url": "http://a", "weight": 0}])
    assert "routes[0] 'users' -> upstream: [1].url: every target must have the same base path" in _error(
        upstream=["http://a/v1", "http://b/v2"]
    )
    assert "routes[0] 'users' -> upstream: must list at least one target" in _error(upstream=[])


def test_bad_resilience_settings_name_the_route_and_field():
    message = _error(retries={"on": [404]}, health_check={"interval": 0}, circuit_breaker={"reset_timeout": -1})
    assert "routes[0] 'users' -> retries.on: 404 is not a 5xx status" in message
    assert "routes[0] 'users' -> health_check.interval:" in message
    assert "routes[0] 'users' -> circuit_breaker.reset_timeout:" in message
    assert "routes[0] 'users' -> max_concurrent:" in _error(max_concurrent=0)
    assert "max_ejection must be at least ejection" in _error(passive_health={"ejection": 10, "max_ejection": 5})


def test_routes_inherit_top_level_resilience_and_may_override_or_turn_it_off():
    settings = Settings(
        routes=[
            ROUTE,
            {"name": "own", "prefix": "/own", "upstream": "http://own", "retries": {"attempts": 5}},
            {"name": "off", "prefix": "/off", "upstream": "http://off", "retries": False, "max_concurrent": 3},
        ],
        retries={"attempts": 2},
        balancing="least_connections",
        max_concurrent=10,
        shutdown_grace=5,
    )
    inherited, own, off = (settings.policies_for(r)[0] for r in settings.routes)
    assert inherited.retries.attempts == 2 and inherited.balancing == "least_connections"
    assert inherited.max_concurrent == 10
    assert own.retries.attempts == 5
    assert off.retries is None and off.max_concurrent == 3
    assert settings.shutdown_grace == 5


def test_resilience_defaults_are_off_except_passive_health():
    settings = Settings(routes=[ROUTE])
    resilience, _ = settings.policies_for(settings.routes[0])
    assert resilience.retries is None and resilience.circuit_breaker is None and resilience.health_check is None
    assert resilience.max_concurrent is None and resilience.balancing == "round_robin"
    assert resilience.passive_health.max_failures == 5
    assert settings.shutdown_grace == 30


def test_a_plain_route_takes_the_plain_path_and_a_target_list_a_pool():
    from app.proxy.routing import CompiledRoute

    settings = Settings(
        routes=[ROUTE, {"name": "two", "prefix": "/two", "upstream": ["http://a", "http://b"]}],
    )
    plain, two = (CompiledRoute.compile(r, settings.timeout, *settings.policies_for(r)) for r in settings.routes)
    assert not plain.pooled
    assert two.pooled and [t.origin for t in two.targets] == ["http://a", "http://b"]


def test_access_log_off_written_bare_in_yaml_turns_the_access_log_off(tmp_path):
    path = tmp_path / "gatehouse.yaml"
    path.write_text("access_log: off\n", encoding="utf-8")
    assert load_settings(path).access_log == "off"


def test_websocket_limits_are_inherited_refused_without_get_and_turned_off_per_route(monkeypatch):
    monkeypatch.setenv("GATEHOUSE_WEBSOCKET__IDLE_TIMEOUT", "60")
    routes = [
        ROUTE,
        {**ROUTE, "name": "own", "prefix": "/own", "websocket": {"max_message_bytes": 4096}},
        {**ROUTE, "name": "off", "prefix": "/off", "websocket": False},
        {**ROUTE, "name": "posts", "prefix": "/posts", "methods": ["POST"]},
    ]
    settings = Settings(routes=routes)
    inherited, own, off, posts = (settings.policies_for(route)[0].websocket for route in settings.routes)
    assert inherited is not None and inherited.idle_timeout == 60 and inherited.max_message_bytes == 1024 * 1024
    assert inherited.compression is False
    assert own is not None and own.max_message_bytes == 4096 and own.idle_timeout == 300
    assert off is None and posts is None


def test_a_websocket_message_limit_over_the_server_cap_names_the_route_and_field():
    with pytest.raises(ConfigError, match=r"routes\[0\] 'users' -> websocket.max_message_bytes"):
        Settings(routes=[{**ROUTE, "websocket": {"max_message_bytes": 17 * 1024 * 1024}}])
