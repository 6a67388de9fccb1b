"""Digests shaped by their recipients: `digest_choices` keeps what each recipient picked
(sections, topics, how often) on the page every copy links to.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from aggregator.storage.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digest_choices",
        sa.Column("digest_id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("sections", sa.JSON),
        sa.Column("topics", sa.JSON),
        sa.Column("frequency", sa.String(16)),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("digest_id", "email", name="pk_digest_choices"),
    )


def downgrade() -> None:
    op.drop_table("digest_choices")
