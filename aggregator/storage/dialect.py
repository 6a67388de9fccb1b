"""What differs between SQLite and PostgreSQL in the statements storage writes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table, text


def insert(conn: Connection, table: Table) -> Any:
    """An INSERT that supports ON CONFLICT on the connection's backend (each dialect's module
    imported when used: PostgreSQL's brings asyncio along, which SQLite users never need)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def serialise(conn: Connection, name: str) -> None:
    """Hold a database-wide lock named `name` until the transaction ends, so that processes
    starting together (migrations, applying the config) take turns. SQLite transactions that
    write are serial already (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
