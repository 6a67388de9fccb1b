"""Initial schema: sources, items, stories, topics, output state, digests, subscribers.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from aggregator.storage.tables import BigId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("fetch_url", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("in_config", sa.Boolean, nullable=False),
        sa.Column("interval_seconds", sa.Integer, nullable=False),
        sa.Column("next_due_at", UTCDateTime, nullable=False),
        sa.Column("etag", sa.Text),
        sa.Column("last_modified", sa.Text),
        sa.Column("last_fetched_at", UTCDateTime),
        sa.Column("last_success_at", UTCDateTime),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("gone_at", UTCDateTime),
        sa.Column("lease_owner", sa.String(128)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sources"),
    )
    op.create_index("ix_sources_next_due_at", "sources", ["next_due_at"])

    op.create_table(
        "stories",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("primary_item_id", BigId),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stories"),
    )

    op.create_table(
        "items",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("guid", sa.Text),
        sa.Column("url", sa.Text),
        sa.Column("canonical_url", sa.Text),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("authors", sa.JSON, nullable=False),
        sa.Column("categories", sa.JSON, nullable=False),
        sa.Column("enclosures", sa.JSON, nullable=False),
        sa.Column("language", sa.String(35)),
        sa.Column("published_at", UTCDateTime),
        sa.Column("updated_at", UTCDateTime),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("first_seen_at", UTCDateTime, nullable=False),
        sa.Column("last_seen_at", UTCDateTime, nullable=False),
        sa.Column("changed_at", UTCDateTime, nullable=False),
        sa.Column("section_id", sa.String(64)),
        sa.Column("story_id", BigId),
        sa.PrimaryKeyConstraint("id", name="pk_items"),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name="fk_items_source_id_sources"),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_items_story_id_stories", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("source_id", "key", name="uq_items_source_id_key"),
    )
    op.create_index("ix_items_canonical_url", "items", ["canonical_url"])
    op.create_index("ix_items_first_seen_at", "items", ["first_seen_at"])
    op.create_index("ix_items_story_id", "items", ["story_id"])

    op.create_table(
        "item_topics",
        sa.Column("item_id", BigId, nullable=False),
        sa.Column("topic_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("item_id", "topic_id", name="pk_item_topics"),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name="fk_item_topics_item_id_items", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_item_topics_topic_id", "item_topics", ["topic_id"])

    op.create_table(
        "output_state",
        sa.Column("output_id", sa.String(64), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("changed_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("output_id", name="pk_output_state"),
    )

    op.create_table(
        "digest_runs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("digest_id", sa.String(64), nullable=False),
        sa.Column("period_start", UTCDateTime, nullable=False),
        sa.Column("period_end", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_digest_runs"),
        sa.UniqueConstraint(
            "digest_id", "period_start", name="uq_digest_runs_digest_id_period_start"
        ),
    )

    op.create_table(
        "deliveries",
        sa.Column("run_id", BigId, nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("message_id", sa.Text),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "recipient", name="pk_deliveries"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["digest_runs.id"],
            name="fk_deliveries_run_id_digest_runs",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "subscribers",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("digest_id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("confirmed_at", UTCDateTime),
        sa.Column("unsubscribed_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_subscribers"),
        sa.UniqueConstraint("digest_id", "email", name="uq_subscribers_digest_id_email"),
    )


def downgrade() -> None:
    for table in (
        "subscribers",
        "deliveries",
        "digest_runs",
        "output_state",
        "item_topics",
        "items",
        "stories",
        "sources",
    ):
        op.drop_table(table)
