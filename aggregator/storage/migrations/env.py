"""Alembic environment: runs migrations on the connection `aggregator.storage.migrate` hands in.

Rule for migrations: no operation that makes Alembic rebuild a SQLite table (alter_column,
drop of a referenced column). SQLite runs with foreign keys on, and rebuilding a table that others
reference would cascade deletes into them. ADD COLUMN, CREATE INDEX and CREATE TABLE are always
safe. (Downgrades, for development databases only, may rebuild.) A SQLite rebuild of `items`
would also drop the search index's trigger (`storage/search.py`): make it again after one.
"""

from alembic import context

from aggregator.storage.search import is_index_table
from aggregator.storage.tables import metadata

connection = context.config.attributes["connection"]


def _declared(name: str | None, kind: str, _parents: object) -> bool:
    """The search index is made by its own DDL, not from `metadata`."""
    return not (kind == "table" and is_index_table(name))


context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    include_name=_declared,
)
with context.begin_transaction():
    context.run_migrations()
