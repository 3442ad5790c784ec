"""Connecting to the webhook store's database, and the one place its errors are translated.

``webhook_store`` accepts ``sqlite:///path`` or ``postgresql://...`` (plain or with
the async driver named); ``store_url`` picks aiosqlite or asyncpg. SQLite gets WAL
and ``synchronous=FULL`` on every connection, and every transaction opens with
``BEGIN IMMEDIATE``; on Postgres a connection the server closed is replaced at checkout
(a restarted server costs no request), and a schema of its own can be set through
``search_path``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy import create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from app.config.webhooks import store_url
from app.webhooks.failures import StoreError as StoreError
from app.webhooks.failures import StoreUnavailable as StoreUnavailable

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


def utc_now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def translate_errors() -> Iterator[None]:
    """The one place driver and pool errors become StoreError."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise StoreUnavailable(f"webhook store unavailable: {_describe(exc.orig or exc)}") from exc
    except (sa_exc.TimeoutError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"webhook store unavailable: {_describe(exc)}") from exc
    except sa_exc.DBAPIError as exc:
        raise StoreError(f"webhook store error: {_describe(exc.orig or exc)}") from exc
    except sa_exc.SQLAlchemyError as exc:
        raise StoreError(f"webhook store error: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    # Driver messages name the failure (locked, refused, ...), never the URL or password.
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, sleep: Callable[[float], None], *, begin: bool) -> None:
    """WAL, ``synchronous=FULL`` and the busy timeout on every connection; with ``begin``,
    every transaction opens with ``BEGIN IMMEDIATE``."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # Switching a new database to WAL can fail with "locked" without consulting the busy
        # handler (several processes opening it at once): retry it within the same budget.
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except Exception as exc:  # the driver's OperationalError; its class is adapter-specific
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                sleep(0.01)
        for pragma in ("synchronous=FULL", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    if not begin:
        return

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so
        # a transaction never fails half-way upgrading a read lock to a write lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_engine(url: URL, busy_timeout_ms: int) -> AsyncEngine:
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})
    # aiosqlite's listener runs in a greenlet on the event loop: wait without blocking it.
    _configure_sqlite(engine.sync_engine, busy_timeout_ms, lambda seconds: await_only(anyio.sleep(seconds)), begin=True)
    return engine


def create_sqlite_writer(url: str, busy_timeout_ms: int = 5000) -> Engine:
    """A plain (pysqlite) engine on a SQLite ``webhook_store`` for the group-committed writes:
    configured as the async one, except that its user sends ``BEGIN IMMEDIATE`` and ``COMMIT``
    itself and its busy timeout is 0 (``BEGIN`` is tried without waiting, see ``DeliveryStore``).

    Their statements run on the event loop (SQLite executes them in microseconds) and only
    the waits, for another process's write lock and for the fsync of ``COMMIT``, go to a
    worker thread. Through aiosqlite every statement, cursor and fetch is a hop to its
    thread (about 15 for one batch of intakes), and on a busy machine each hop waits for
    the GIL and a core. ``check_same_thread`` is off (SQLAlchemy's default for files): the
    connection is used by the loop and by whichever worker thread waits.
    """
    engine = create_engine(
        store_url(url).set(drivername="sqlite+pysqlite"), connect_args={"timeout": busy_timeout_ms / 1000}
    )
    _configure_sqlite(engine, busy_timeout_ms, time.sleep, begin=False)

    @event.listens_for(engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    return engine


def _postgres_engine(url: URL, schema: str | None, connect_timeout: float, command_timeout: float) -> AsyncEngine:
    # command_timeout makes asyncpg cancel a statement server-side and raise; nothing waits forever.
    connect_args: dict[str, Any] = {"timeout": connect_timeout, "command_timeout": command_timeout}
    if schema is not None:
        connect_args["server_settings"] = {"search_path": schema}
    engine = create_async_engine(url, pool_timeout=connect_timeout, connect_args=connect_args)

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _closed_is_disconnected(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # Instead of pool_pre_ping, which on asyncpg costs three round trips per checkout (BEGIN, ";",
        # ROLLBACK, for pgbouncer's transaction mode) -- on the dispatcher's hot path more than its
        # claim's own statements. A server that ends the session (restart, pg_terminate_backend)
        # closes the socket, which asyncpg has seen by the next checkout: the pool then connects
        # anew, and the write costs nothing. A connection lost without a word fails its statement.
        if dbapi_connection.driver_connection.is_closed():
            raise sa_exc.DisconnectionError("the server closed the connection")

    return engine


def create_store_engine(
    url: str,
    *,
    schema: str | None = None,
    busy_timeout_ms: int = 5000,
    connect_timeout: float = 5.0,
    command_timeout: float = 30.0,
) -> AsyncEngine:
    """An async engine for a ``webhook_store`` URL.

    SQLite waits at most ``busy_timeout_ms`` for a lock; Postgres at most
    ``connect_timeout`` to connect and ``command_timeout`` for a statement.
    ``schema`` applies to Postgres only.
    """
    parsed = store_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, busy_timeout_ms)
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise ValueError(f"schema {schema!r}: use lower-case letters, digits and '_'")
    return _postgres_engine(parsed, schema, connect_timeout, command_timeout)
