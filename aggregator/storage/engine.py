"""Opening a database: URL defaults, and SQLite set up for a long-running service.

SQLite runs in WAL mode (readers never wait for the writer), with foreign keys enforced and a busy
timeout so that a second connection waits for the lock instead of failing at once. pysqlite's own
transaction handling is switched off and SQLAlchemy emits BEGIN itself, so a read followed by a
write in one transaction is really one transaction; transactions that may write begin IMMEDIATE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from aggregator.exceptions import StorageError

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> str:
    """Accept the URLs people write (`postgresql://`, `postgres://`) and pick psycopg 3 for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def may_hold_data(url: str) -> bool:
    """False for a SQLite file that does not exist yet (nothing to read, and opening it would
    create it); True otherwise (a server is asked when opened)."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        return True  # opening it says what is wrong
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return True
    return database.startswith("file:") or Path(database).exists()


def make_engine(url: str) -> Engine:
    """An engine for a SQLite or PostgreSQL URL; a SQLite file's folder is created if missing."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"{url!r} is not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except ImportError:  # the driver is an extra: SQLite users do without it
            raise StorageError(
                "PostgreSQL needs its driver, which is not installed: "
                "pip install 'aggregator[postgres]' (or psycopg[binary])"
            ) from None
    raise StorageError(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql"
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event emits BEGIN instead
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


WRITE_OPTION = "aggregator_write"


def _sqlite_on_begin(connection: Any) -> None:
    # A transaction that may write takes the write lock up front (IMMEDIATE): upgrading a read
    # lock later fails at once with "database is locked" when another writer got in between.
    write = connection.get_execution_options().get(WRITE_OPTION, True)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
