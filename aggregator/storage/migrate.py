"""Schema migrations with Alembic (the only module that drives it), applied at start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from aggregator.exceptions import StorageError
from aggregator.storage.dialect import serialise

SCRIPTS = Path(__file__).parent / "migrations"


def _config(connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this code knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision`; safe to call on every start."""
    try:
        with engine.begin() as connection:
            serialise(connection, "aggregator.migrate")
            command.upgrade(_config(connection), revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot migrate the database: {exc}") from exc


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.downgrade(_config(connection), revision)
