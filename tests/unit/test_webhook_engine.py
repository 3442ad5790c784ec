import pytest
from pydantic import TypeAdapter, ValidationError

from app.config.webhooks import DEFAULT_WEBHOOK_STORE, WebhookStoreUrl, store_url
from app.webhooks.database import create_store_engine


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://gh@db:5432/gatehouse", "postgresql+asyncpg"),
        ("postgres://gh@db/gatehouse", "postgresql+asyncpg"),
        ("postgresql+asyncpg://gh@db/gatehouse", "postgresql+asyncpg"),
        ("sqlite:///./gatehouse-webhooks.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:////var/lib/gatehouse/webhooks.db", "sqlite+aiosqlite"),
        (DEFAULT_WEBHOOK_STORE, "sqlite+aiosqlite"),
    ],
)
def test_store_url_picks_the_async_driver(given, driver):
    assert store_url(given).drivername == driver


def test_store_url_keeps_host_database_and_credentials():
    url = store_url("postgresql://gh:s3cret@db.internal:6543/relay")
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "db.internal",
        6543,
        "relay",
        "gh",
        "s3cret",
    )
    assert "s3cret" not in repr(url)


@pytest.mark.parametrize("given", ["sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite://"])
def test_in_memory_sqlite_is_refused_as_not_durable(given):
    with pytest.raises(ValueError, match="not durable"):
        store_url(given)


def test_other_backends_are_refused():
    with pytest.raises(ValueError, match="unsupported backend 'mysql'"):
        store_url("mysql://root@db/relay")


def test_postgres_schema_name_is_checked():
    with pytest.raises(ValueError, match="schema"):
        create_store_engine("postgresql://gh@db/relay", schema='x"; DROP TABLE y; --')


def test_webhook_store_setting_validates_at_start_up():
    adapter = TypeAdapter(WebhookStoreUrl)
    assert adapter.validate_python("postgresql://gh@db/relay") == "postgresql://gh@db/relay"
    with pytest.raises(ValidationError, match="not a database URL"):
        adapter.validate_python("not a url")
    with pytest.raises(ValidationError, match="unsupported backend"):
        adapter.validate_python("oracle://scott@db/relay")
