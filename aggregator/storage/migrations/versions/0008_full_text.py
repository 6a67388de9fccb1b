"""Full text: an item of a `full_text` source keeps its article page's main text.

`items.article` is the text (shown as the item's content; the feed's own content stays in
`content`, so the feed's next edit is still told from the article), `items.article_at` when the
page was fetched (NULL: not yet, so each page is fetched once) and `items.article_error` why it
could not be read. `sources.last_article_error` says what went wrong at the source's last poll.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("article", sa.Text))
        batch.add_column(sa.Column("article_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("article_error", sa.Text))
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("last_article_error", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("last_article_error")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("article_error")
        batch.drop_column("article_at")
        batch.drop_column("article")
