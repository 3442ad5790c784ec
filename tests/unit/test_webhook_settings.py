"""The webhook part of ``Settings``: defaults, the store URL, and paths that must not collide."""

from __future__ import annotations

import json

import pytest

from app.config.settings import ConfigError, Settings
from app.config.webhooks import store_url
from tests.webhooks import endpoint


def test_webhook_defaults_are_sqlite_in_the_working_directory_and_a_week_of_retention():
    settings = Settings()
    assert settings.webhooks == []
    assert store_url(settings.webhook_store).drivername == "sqlite+aiosqlite"
    assert settings.retention_days == 7
    assert settings.webhook_lease_seconds > 10


def test_plain_postgresql_url_is_accepted_and_runs_on_asyncpg():
    settings = Settings(webhook_store="postgresql://gatehouse@127.0.0.1/test")
    assert store_url(settings.webhook_store).drivername == "postgresql+asyncpg"


def test_unsupported_store_url_fails_naming_the_field():
    with pytest.raises(ConfigError, match="webhook_store"):
        Settings(webhook_store="mysql://db/x")


def test_webhook_path_inside_a_route_prefix_is_refused_naming_the_endpoint():
    route = {"name": "api", "prefix": "/api", "upstream": "http://127.0.0.1:9"}
    with pytest.raises(ConfigError, match=r"webhooks\[0\] 'gh' -> path: '/api/hooks' is inside route 'api'"):
        Settings(routes=[route], webhooks=[endpoint("gh", "/api/hooks", "http://127.0.0.1:9")])


def test_catch_all_route_collides_with_every_webhook_path():
    route = {"name": "all", "prefix": "/", "upstream": "http://127.0.0.1:9"}
    with pytest.raises(ConfigError, match="is inside route 'all'"):
        Settings(routes=[route], webhooks=[endpoint("gh", "/hooks", "http://127.0.0.1:9")])


def test_webhook_path_under_ops_prefix_is_refused():
    with pytest.raises(ConfigError, match=r"webhooks\[0\] 'gh' -> path: .* inside ops_prefix"):
        Settings(webhooks=[endpoint("gh", "/_gatehouse/hooks", "http://127.0.0.1:9")])


def test_webhook_next_to_a_route_with_a_similar_prefix_is_fine():
    route = {"name": "api", "prefix": "/api", "upstream": "http://127.0.0.1:9"}
    settings = Settings(routes=[route], webhooks=[endpoint("gh", "/apihooks", "http://127.0.0.1:9")])
    assert settings.webhooks[0].path == "/apihooks"


def test_target_timeout_must_be_shorter_than_the_lease():
    hook = endpoint("gh", "/hooks", "http://127.0.0.1:9", target={"timeout": 30})
    with pytest.raises(ConfigError, match="webhook_lease_seconds"):
        Settings(webhooks=[hook], webhook_lease_seconds=30)


def test_invalid_webhook_field_error_names_the_endpoint_and_field():
    hook = endpoint("gh", "/hooks", "ftp://nowhere")
    with pytest.raises(ConfigError, match=r"webhooks\[0\] 'gh' -> deliver_to\[0\]\.url"):
        Settings(webhooks=[hook])


def test_webhook_settings_come_from_the_environment(monkeypatch):
    hook = endpoint("gh", "/hooks", "http://127.0.0.1:9")
    monkeypatch.setenv("GATEHOUSE_WEBHOOKS", json.dumps([hook]))
    monkeypatch.setenv("GATEHOUSE_WEBHOOK_STORE", "postgresql://u@127.0.0.1/test")
    monkeypatch.setenv("GATEHOUSE_RETENTION_DAYS", "30")
    monkeypatch.setenv("GATEHOUSE_WEBHOOK_DISPATCH_CONCURRENCY", "5")
    settings = Settings()
    assert settings.webhooks[0].name == "gh"
    assert settings.retention_days == 30
    assert settings.webhook_dispatch_concurrency == 5
