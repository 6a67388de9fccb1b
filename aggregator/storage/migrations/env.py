"""Alembic environment: runs migrations on the connection `aggregator.storage.migrate` hands in."""

from alembic import context

from aggregator.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
