import json

import pytest

from app.settings import ConfigError, Settings, load_settings

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
