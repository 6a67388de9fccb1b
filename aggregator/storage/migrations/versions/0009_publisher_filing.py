"""The publisher's own filing: what an article page says it is filed under.

`items.publisher` holds the breadcrumb, section, keywords, tags and labels read off the article
page of a `full_text` source's item, as [kind, term] pairs, for section and topic rules to match.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("publisher", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("publisher")
