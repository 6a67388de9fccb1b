"""The database schema as SQLAlchemy Core tables: the one place that names columns.

Migrations under `migrations/versions` create exactly this (a test compares them), so a change here
always comes with a new migration.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    false,
    text,
    true,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would otherwise hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to storage; use aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(moment, datetime)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_AS_UTC = UTCDateTime()


def time_writer(dialect: Dialect) -> Callable[[datetime | None], Any]:
    """What SQLAlchemy writes for a UTCDateTime on this database, for statements run at the
    driver (items.py, sources.py): the column type's own conversion (aware, as UTC), then, on
    SQLite, its DATETIME text (what isoformat writes of the naive
    time, to the microsecond, with a space between date and time)."""
    sqlite = dialect.name == "sqlite"

    def write(value: datetime | None) -> Any:
        if sqlite and value is not None and value.tzinfo is UTC:  # what the type does to it
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")
        moment = _AS_UTC.process_bind_param(value, dialect)
        if moment is None or not sqlite:
            return moment
        return moment.isoformat(" ", "microseconds")

    return write


# An autoincrementing key that is 64-bit on PostgreSQL and SQLite's ROWID on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

sources = Table(
    "sources",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("fetch_url", Text, nullable=False),
    Column("title", Text, nullable=False, default=""),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("in_config", Boolean, nullable=False, default=True),
    Column("interval_seconds", Integer, nullable=False),
    Column("next_due_at", UTCDateTime, nullable=False, index=True),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("last_fetched_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("gone_at", UTCDateTime),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("feed_title", Text),
    Column("last_warning", Text),
    Column("last_entry_count", Integer),
    Column("priority", Integer, nullable=False, default=0, server_default=text("0")),
    # fetch_url is the feed found on the page at `url` (autodiscovery), not a redirect's target
    Column("discovered", Boolean, nullable=False, default=False, server_default=false()),
    # full_text sources: what went wrong with article pages at the last poll that fetched some
    Column("last_article_error", Text),
)

stories = Table(
    "stories",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("primary_item_id", BigId),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # the item that opened the story: its published id is the story's, even once it is pruned
    Column("first_source_id", String(64)),
    Column("first_key", Text),
)

_SEARCH_PENDING = text("search_pending")  # the items the search index has yet to read
_SEARCH_PENDING_INDEX = Index("ix_items_search_pending", "id", sqlite_where=_SEARCH_PENDING)

items = Table(
    "items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_id", String(64), ForeignKey("sources.id"), nullable=False),
    Column("key", Text, nullable=False),
    Column("guid", Text),
    Column("url", Text),
    Column("canonical_url", Text, index=True),
    Column("title", Text, nullable=False, default=""),
    Column("summary", Text, nullable=False, default=""),
    Column("content", Text, nullable=False, default=""),
    Column("authors", JSON, nullable=False),
    Column("categories", JSON, nullable=False),
    Column("enclosures", JSON, nullable=False),
    Column("language", String(35)),
    Column("image", Text),
    Column("published_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
    Column("content_hash", String(64), nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("section_id", String(64)),
    Column("story_id", BigId, ForeignKey("stories.id", ondelete="SET NULL"), index=True),
    Column("revisions", Integer, nullable=False, default=0, server_default=text("0")),
    Column("fingerprint", LargeBinary),  # MinHash signature of the text, for the story index
    Column("section_reason", JSON),
    Column("story_reason", JSON),
    Column("story_pinned", Boolean, nullable=False, default=False, server_default=false()),
    # full_text sources: the article page's main text (shown as the content), when it was
    # fetched (NULL: not yet), and why it could not be read
    Column("article", Text),
    Column("article_at", UTCDateTime),
    Column("article_error", Text),
    Column("publisher", JSON),  # the publisher's own filing on the article page: [[kind, term]]
    # article pages that failed for a while (a timeout, a 5xx): tried again, up to a bound
    Column("article_tries", Integer, nullable=False, default=0, server_default=text("0")),
    Column("duration", Integer),  # a podcast episode's length in seconds (itunes:duration)
    Column("explicit", Boolean),  # itunes:explicit, where the feed says
    # the text changed since the search index last read it (a new item is marked by default)
    Column("search_pending", Boolean, nullable=False, default=True, server_default=true()),
    UniqueConstraint("source_id", "key"),
    # pages of a feed seek to their cursor on these (all items, a section, a source)
    Index("ix_items_first_seen_at_id", "first_seen_at", "id"),
    Index("ix_items_section_id_first_seen_at_id", "section_id", "first_seen_at", "id"),
    Index("ix_items_source_id_first_seen_at_id", "source_id", "first_seen_at", "id"),
    Index("ix_items_last_seen_at", "last_seen_at"),
    # the items the search index has yet to read, and only those
    _SEARCH_PENDING_INDEX,
)


def for_postgresql() -> None:
    """Give the tables what only PostgreSQL reads. Naming PostgreSQL's WHERE in the Index loaded
    that dialect (and asyncio with it) in every SQLite process, 50 ms and 2 MiB; it is added here
    instead, before any CREATE on a PostgreSQL connection (the migrations name their own)."""
    _SEARCH_PENDING_INDEX.dialect_options["postgresql"]["where"] = _SEARCH_PENDING


@event.listens_for(metadata, "before_create")
def _before_create(_target: MetaData, connection: Connection, **_kw: Any) -> None:
    if connection.dialect.name == "postgresql":
        for_postgresql()


# Keys of items removed by retention: an entry with such a key is never stored again.
pruned_keys = Table(
    "pruned_keys",
    metadata,
    Column("source_id", String(64), ForeignKey("sources.id"), nullable=False),
    Column("key", Text, nullable=False),
    Column("pruned_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("source_id", "key"),
)

item_topics = Table(
    "item_topics",
    metadata,
    Column("item_id", BigId, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("topic_id", String(64), nullable=False),
    Column("reason", JSON, nullable=False),
    PrimaryKeyConstraint("item_id", "topic_id"),
    Index("ix_item_topics_topic_id", "topic_id"),
)

# Per published feed (`feeds/ID`, `sections/ID`, ...): what its first page held when a worker
# last told the WebSub hub, so that one worker (not each) pings per change.
output_state = Table(
    "output_state",
    metadata,
    Column("output_id", String(100), primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
)

# Counters that move in the transaction that changes what they count: `items` moves whenever an
# item is added, edited, refiled, merged, unmerged or pruned, so a web process knows its cached
# feeds may be stale by reading one row.
revisions = Table(
    "revisions",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)


def seed_rows() -> list[tuple[Table, list[dict[str, Any]]]]:
    """The rows the migrations put in a new database, for one made from these definitions
    (a test holds the two databases equal): the items revision counter starts at 0."""
    return [(revisions, [{"name": "items", "value": 0}])]


digest_runs = Table(
    "digest_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("digest_id", String(64), nullable=False),
    Column("period_start", UTCDateTime, nullable=False),
    Column("period_end", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("claimed_by", String(128)),
    Column("lease_expires_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    UniqueConstraint("digest_id", "period_start"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("run_id", BigId, ForeignKey("digest_runs.id", ondelete="CASCADE"), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text),
    Column("message_id", Text),
    Column("at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("run_id", "recipient"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("digest_id", String(64), nullable=False),
    Column("email", String(320), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime),
    Column("unsubscribed_at", UTCDateTime),
    Column("confirm_sent_at", UTCDateTime),  # the last confirmation mailed: one an hour at most
    UniqueConstraint("digest_id", "email"),
)

# What a digest's recipient chose on the page every copy links to (web subscribers and YAML
# recipients alike, by lower-cased address): no row, the whole digest on its schedule
digest_choices = Table(
    "digest_choices",
    metadata,
    Column("digest_id", String(64), nullable=False),
    Column("email", String(320), nullable=False),
    Column("sections", JSON),  # null: every section
    Column("topics", JSON),  # null or []: every story
    Column("frequency", String(16)),  # null: the digest's schedule; "weekly"
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("digest_id", "email"),
)
