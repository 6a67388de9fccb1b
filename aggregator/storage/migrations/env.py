"""Alembic environment: runs migrations on the connection `aggregator.storage.migrate` hands in.

Rule for migrations: no operation that makes Alembic rebuild a SQLite table (alter_column,
drop of a referenced column). SQLite runs with foreign keys on, and rebuilding a table that others
reference would cascade deletes into them. ADD COLUMN, CREATE INDEX and CREATE TABLE are always
safe. (Downgrades, for development databases only, may rebuild.)
"""

from alembic import context

from aggregator.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
