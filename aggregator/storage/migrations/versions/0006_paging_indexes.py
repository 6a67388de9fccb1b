"""Paging indexes: every page of a feed is a keyset seek, whatever its depth.

A page is `ORDER BY first_seen_at DESC, id DESC` after a `(first_seen_at, id) < cursor` bound, on
all items or on one section or source. Indexes ending in (first_seen_at, id) let the database seek
to the cursor and read one page in order, instead of scanning every newer item (or sorting a
whole section) first. They replace the narrower indexes they extend, which served as prefixes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_items_first_seen_at_id", "items", ["first_seen_at", "id"])
    op.create_index(
        "ix_items_section_id_first_seen_at_id", "items", ["section_id", "first_seen_at", "id"]
    )
    op.create_index(
        "ix_items_source_id_first_seen_at_id", "items", ["source_id", "first_seen_at", "id"]
    )
    op.drop_index("ix_items_first_seen_at", "items")
    op.drop_index("ix_items_section_id", "items")
    op.drop_index("ix_items_source_id_first_seen_at", "items")


def downgrade() -> None:
    op.create_index("ix_items_source_id_first_seen_at", "items", ["source_id", "first_seen_at"])
    op.create_index("ix_items_section_id", "items", ["section_id"])
    op.create_index("ix_items_first_seen_at", "items", ["first_seen_at"])
    op.drop_index("ix_items_source_id_first_seen_at_id", "items")
    op.drop_index("ix_items_section_id_first_seen_at_id", "items")
    op.drop_index("ix_items_first_seen_at_id", "items")
