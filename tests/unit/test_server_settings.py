"""The ``server:`` block and ``ops_listen``: defaults, and bad values that fail start-up naming the field."""

from __future__ import annotations

import pytest

from app.config.settings import ConfigError, Settings


def test_server_defaults_bound_slow_and_surplus_clients():
    server = Settings().server
    assert (server.header_timeout, server.keepalive_timeout, server.max_connections) == (10.0, 5.0, 1000)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"header_timeout": 0}, "server.header_timeout"),
        ({"keepalive_timeout": -1}, "server.keepalive_timeout"),
        ({"max_connections": 0}, "server.max_connections"),
        ({"header_timout": 5}, "server.header_timout"),
    ],
)
def test_a_bad_server_setting_fails_naming_the_field(value, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        Settings(server=value)


def test_server_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GATEHOUSE_SERVER__HEADER_TIMEOUT", "2.5")
    assert Settings().server.header_timeout == 2.5


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [("127.0.0.1:9000", "127.0.0.1", 9000), ("[::1]:9000", "::1", 9000), (":9100", "0.0.0.0", 9100)],
)
def test_ops_listen_is_host_and_port(value, host, port):
    assert Settings(ops_listen=value).ops_listen == (host, port)


@pytest.mark.parametrize("value", ["9000", "127.0.0.1", "127.0.0.1:99999", "::1:9000", "[nope]:9000", "host:port"])
def test_a_bad_ops_listen_fails_naming_the_field(value):
    with pytest.raises(ConfigError, match="ops_listen: "):
        Settings(ops_listen=value)


def test_tokens_are_at_least_16_characters():
    with pytest.raises(ConfigError, match="metrics_token"):
        Settings(metrics_token="short")
