"""The publisher's own filing: what an article page says it is filed under.

`items.publisher` holds the breadcrumb, section, keywords, tags and labels read off the article
page of a `full_text` source's item, as [kind, term] pairs, for section and topic rules to match.
`items.article_tries` counts article fetches that failed for a while (a timeout, a network error,
429, 5xx), which are tried again at later polls up to a bound.

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
        batch.add_column(
            sa.Column("article_tries", sa.Integer, nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("article_tries")
        batch.drop_column("publisher")
