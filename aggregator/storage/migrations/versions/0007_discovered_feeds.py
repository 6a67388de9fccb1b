"""Autodiscovery: a source's `url` may be a web page, polled at the feed found on it.

`sources.discovered` says that `fetch_url` is that feed (not a permanent redirect's target), so
the status page and `aggregator sources` say "its feed is" rather than "moved".

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(
            sa.Column("discovered", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("discovered")
