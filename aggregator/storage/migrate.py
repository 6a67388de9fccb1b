"""Schema migrations with Alembic (the only module that drives it), applied at start-up.

Alembic is imported only when there is something to migrate: a database already at HEAD (every
start but the first after an upgrade) is told by one query, and a new, empty database is made
from the table definitions and stamped HEAD, as Alembic would stamp it. Alembic costs a process
about 12 MiB that it keeps for its life, and 70 ms. HEAD must name the newest migration; tests
hold it to Alembic's own head, and a database made new to one made by the migrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from aggregator.exceptions import StorageError
from aggregator.storage import search
from aggregator.storage.dialect import serialise

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

SCRIPTS = Path(__file__).parent / "migrations"
HEAD = "0012"
# Alembic's own version table, as its migration context defines it
_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _config(connection: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this code knows."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head", *, create_new: bool = True) -> None:
    """Bring the database to `revision`; safe to call on every start. `create_new=False`: an
    empty database is migrated step by step too (what the tests of the migrations need)."""
    if revision == "head" and at_head(engine):
        return
    try:
        if revision == "head" and create_new and _created(engine):
            return
        from alembic import command

        with engine.begin() as connection:
            serialise(connection, "aggregator.migrate")
            command.upgrade(_config(connection), revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot migrate the database: {exc}") from exc


def _created(engine: Engine) -> bool:
    """Make a database that holds none of the tables from their definitions, with the rows the
    migrations seed, stamped HEAD; False (nothing done) where it holds any."""
    from aggregator.storage.tables import metadata, seed_rows

    with engine.begin() as connection:
        serialise(connection, "aggregator.migrate")
        if set(inspect(connection).get_table_names()) & {*metadata.tables, _VERSION.name}:
            return False
        metadata.create_all(connection)
        search.create(connection)  # the full-text index, which is no SQLAlchemy table
        for table, rows in seed_rows():
            connection.execute(table.insert(), rows)
        _VERSION.create(connection)
        connection.execute(_VERSION.insert().values(version_num=HEAD))
    return True


def at_head(engine: Engine) -> bool:
    """The database is at HEAD already (one query, no Alembic)."""
    try:
        with engine.connect() as connection:
            found = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:  # no table yet: a new database
        return False
    return [row[0] for row in found] == [HEAD]


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(_config(connection), revision)
