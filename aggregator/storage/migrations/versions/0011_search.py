"""Full-text search: the index (`item_search`: FTS5 on SQLite, a tsvector on PostgreSQL) and
`items.search_pending`, the items it has yet to read; every stored item starts marked, so the
service's indexing job takes the items stored before this migration too.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from aggregator.storage import search

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(
            sa.Column("search_pending", sa.Boolean, nullable=False, server_default=sa.true())
        )
    op.create_index(
        "ix_items_search_pending",
        "items",
        ["id"],
        sqlite_where=sa.text("search_pending"),
        postgresql_where=sa.text("search_pending"),
    )
    search.create(op.get_bind())


def downgrade() -> None:
    search.drop(op.get_bind())
    op.drop_index("ix_items_search_pending", "items")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("search_pending")
