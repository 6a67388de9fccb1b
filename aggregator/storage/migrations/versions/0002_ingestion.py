"""Ingestion: source health details, item images and revisions, keys pruned by retention.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from aggregator.storage.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("feed_title", sa.Text))
        batch.add_column(sa.Column("last_warning", sa.Text))
        batch.add_column(sa.Column("last_entry_count", sa.Integer))
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("image", sa.Text))
        batch.add_column(
            sa.Column("revisions", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
    op.create_index("ix_items_source_id_first_seen_at", "items", ["source_id", "first_seen_at"])
    op.create_index("ix_items_last_seen_at", "items", ["last_seen_at"])
    op.create_table(
        "pruned_keys",
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("pruned_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("source_id", "key", name="pk_pruned_keys"),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name="fk_pruned_keys_source_id_sources"
        ),
    )


def downgrade() -> None:
    op.drop_table("pruned_keys")
    op.drop_index("ix_items_last_seen_at", "items")
    op.drop_index("ix_items_source_id_first_seen_at", "items")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("revisions")
        batch.drop_column("image")
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("last_entry_count")
        batch.drop_column("last_warning")
        batch.drop_column("feed_title")
