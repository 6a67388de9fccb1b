"""Stories and filing: source priority, item fingerprints, why an item was filed and merged.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(
            sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("fingerprint", sa.LargeBinary))
        batch.add_column(sa.Column("section_reason", sa.JSON))
        batch.add_column(sa.Column("story_reason", sa.JSON))
        batch.add_column(
            sa.Column("story_pinned", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_index("ix_items_section_id", "items", ["section_id"])


def downgrade() -> None:
    op.drop_index("ix_items_section_id", "items")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("story_pinned")
        batch.drop_column("story_reason")
        batch.drop_column("section_reason")
        batch.drop_column("fingerprint")
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("priority")
