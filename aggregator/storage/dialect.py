"""What differs between SQLite and PostgreSQL in the statements storage writes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert


def insert(conn: Connection, table: Table) -> Any:
    """An INSERT that supports ON CONFLICT on the connection's backend."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def serialise(conn: Connection, name: str) -> None:
    """Hold a database-wide lock named `name` until the transaction ends, so that processes
    starting together (migrations, applying the config) take turns. SQLite transactions that
    write are serial already (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
