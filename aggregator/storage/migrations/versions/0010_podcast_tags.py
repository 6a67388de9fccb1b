"""Podcast episodes keep their iTunes tags: `items.duration` (seconds) and `items.explicit`, so a
republished podcast carries them on to podcast apps.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("duration", sa.Integer))
        batch.add_column(sa.Column("explicit", sa.Boolean))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("explicit")
        batch.drop_column("duration")
