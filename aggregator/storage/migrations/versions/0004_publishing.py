"""Publishing: a revision counter that moves when published content may change, output keys long
enough for `sections/ID`, and the item that opened each story (its published id outlives it).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    revisions = op.create_table(
        "revisions",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_revisions"),
    )
    op.bulk_insert(revisions, [{"name": "items", "value": 0}])
    with op.batch_alter_table("output_state") as batch:
        batch.alter_column("output_id", type_=sa.String(100), existing_nullable=False)
    with op.batch_alter_table("stories") as batch:
        batch.add_column(sa.Column("first_source_id", sa.String(64)))
        batch.add_column(sa.Column("first_key", sa.Text))
    first = (
        "(SELECT {column} FROM items WHERE items.story_id = stories.id ORDER BY items.id LIMIT 1)"
    )
    op.execute(
        f"UPDATE stories SET first_source_id = {first.format(column='source_id')}, "
        f"first_key = {first.format(column='key')}"
    )


def downgrade() -> None:
    with op.batch_alter_table("stories") as batch:
        batch.drop_column("first_key")
        batch.drop_column("first_source_id")
    with op.batch_alter_table("output_state") as batch:
        batch.alter_column("output_id", type_=sa.String(64), existing_nullable=False)
    op.drop_table("revisions")
