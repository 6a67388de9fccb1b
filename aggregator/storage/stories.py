"""Stories: each item belongs to one; alike items from any source share one.

Linking runs in the transaction that inserts the items, under a database-wide lock
(`serialise`), so two workers never open two stories for one event, and item ids enter the
story index in the order their transactions commit: each process's index catches up on what
others stored by reading the ids above its watermark.

How an item joined its story is kept on the item (`story_reason`): {"by": "link"} (same
canonical link as an item of the story), {"by": "text", "score": 0.82, "item": 12} (alike text),
{"by": "editor"} (split off by hand, and never merged again), or NULL: it opened the story.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update

from aggregator.storage.dialect import serialise
from aggregator.storage.items import NewItem
from aggregator.storage.tables import items, sources, stories
from aggregator.types import StoryIndex

_CHUNK = 500
_LOAD_PART = 50_000
LOCK = "aggregator.stories"


def catch_up(conn: Connection, index: StoryIndex, now: datetime, below: int | None = None) -> int:
    """Add to the index the items stored since its watermark (by any process), in the window;
    `below`: only ids under it (the batch being linked is added once it is linked)."""
    if below is not None and below <= index.watermark + 1:
        index.expire(now)
        return 0  # ids are handed out in lock order: nobody stored anything in between
    since = now - index.window
    query = (
        select(
            items.c.id,
            items.c.fingerprint,
            func.coalesce(items.c.published_at, items.c.first_seen_at).label("at"),
        )
        .where(
            items.c.id > index.watermark,
            items.c.fingerprint.is_not(None),
            items.c.first_seen_at >= since,
        )
        .order_by(items.c.id)
    )
    if below is not None:
        query = query.where(items.c.id < below)
    count = 0
    # in parts, so that loading a full window at start never holds every row at once
    result = conn.execute(query.execution_options(yield_per=_LOAD_PART))
    for part in result.partitions():
        index.add_many((row.id, row.fingerprint, _aware(row.at)) for row in part)
        count += len(part)
    index.expire(now)
    return count


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def link(
    conn: Connection, fresh: Sequence[NewItem], index: StoryIndex | None, now: datetime
) -> None:
    """Give each new item a story: the story of an item with the same canonical link, else of
    the most alike item in the window, else a new one; then settle the lead of each story that
    gained an item. A handful of statements per batch, however many items it holds."""
    if not fresh:
        return
    if index is not None:
        catch_up(conn, index, now, below=min(item.id for item in fresh))
    by_link = _stories_by_link(conn, fresh) if index is not None else {}
    similar = _similar(conn, fresh, index) if index is not None else {}
    within = _within(fresh, index) if index is not None else {}
    # first decide, by item: an existing story, an earlier item of this batch, or a new story
    joins: dict[int, int] = {}  # item id -> existing story id
    follows: dict[int, int] = {}  # item id -> earlier item of this batch
    reasons: dict[int, dict[str, Any]] = {}
    first_with_link: dict[str, int] = {}
    for item in fresh:
        link_url = item.entry.canonical_link
        if link_url and link_url in by_link:
            joins[item.id], reasons[item.id] = by_link[link_url], {"by": "link"}
        elif index is not None and link_url and link_url in first_with_link:
            follows[item.id], reasons[item.id] = first_with_link[link_url], {"by": "link"}
        elif item.id in similar:
            joins[item.id], score, other = similar[item.id]
            reasons[item.id] = {"by": "text", "score": round(score, 3), "item": other}
        elif item.id in within:
            follows[item.id], score = within[item.id]
            reasons[item.id] = {"by": "text", "score": round(score, 3), "item": follows[item.id]}
        else:
            reasons[item.id] = {"by": "new"}
        if link_url:
            first_with_link.setdefault(link_url, item.id)
    # then write: the new stories in one statement, the items' stories in another
    opening = [item.id for item in fresh if reasons[item.id]["by"] == "new"]
    story_of = dict(joins)
    if opening:
        created = conn.execute(  # keyed by lead, not ordered: see items.save
            stories.insert().returning(stories.c.id, stories.c.primary_item_id),
            [{"primary_item_id": i, "created_at": now, "updated_at": now} for i in opening],
        )
        story_of.update((row.primary_item_id, row.id) for row in created)
    for item in fresh:  # in order, so an item followed an earlier one whose story is known
        if item.id in follows:
            story_of[item.id] = story_of[follows[item.id]]
    conn.execute(
        update(items)
        .where(items.c.id == bindparam("item_id"))
        .values(story_id=bindparam("story"), story_reason=bindparam("reason")),
        [
            {
                "item_id": item.id,
                "story": story_of[item.id],
                # the common case, an item opening its story, is stored as no reason at all
                "reason": None if reasons[item.id]["by"] == "new" else reasons[item.id],
            }
            for item in fresh
        ],
    )
    grown = {story_of[i] for i in (*joins, *follows)}
    if grown:
        settle_leads(conn, grown, now)
    if index is not None:
        index.add_many(
            (item.id, item.filing.fingerprint, item.when)
            for item in fresh
            if item.filing.fingerprint
        )


def _within(fresh: Sequence[NewItem], index: StoryIndex) -> dict[int, tuple[int, float]]:
    """New item id -> (earlier new item, score) for items like another of the same batch."""
    with_text = [item for item in fresh if item.filing.fingerprint]
    found = index.similar_within(
        [item.filing.fingerprint or b"" for item in with_text], [item.when for item in with_text]
    )
    return {
        with_text[i].id: (with_text[pairs[0][0]].id, pairs[0][1])
        for i, pairs in enumerate(found)
        if pairs
    }


def _stories_by_link(conn: Connection, fresh: Sequence[NewItem]) -> dict[str, int]:
    links = sorted({i.entry.canonical_link for i in fresh if i.entry.canonical_link})
    found: dict[str, int] = {}
    for start in range(0, len(links), _CHUNK):
        rows = conn.execute(
            select(items.c.canonical_url, items.c.story_id)
            .where(items.c.canonical_url.in_(links[start : start + _CHUNK]))
            .where(items.c.story_id.is_not(None))
            .order_by(items.c.id)
        )
        for row in rows:
            found.setdefault(row.canonical_url, row.story_id)
    return found


def _similar(
    conn: Connection, fresh: Sequence[NewItem], index: StoryIndex
) -> dict[int, tuple[int, float, int]]:
    """New item id -> (story, score, alike item) for items like one already in a story."""
    with_text = [item for item in fresh if item.filing.fingerprint]
    if not with_text:
        return {}
    matches = index.similar_many(
        [item.filing.fingerprint or b"" for item in with_text], [item.when for item in with_text]
    )
    wanted = sorted({m.item_id for found in matches for m in found})
    stories_of: dict[int, int] = {}
    for start in range(0, len(wanted), _CHUNK):
        rows = conn.execute(
            select(items.c.id, items.c.story_id).where(
                items.c.id.in_(wanted[start : start + _CHUNK]), items.c.story_id.is_not(None)
            )
        )
        stories_of.update({row.id: row.story_id for row in rows})
    result: dict[int, tuple[int, float, int]] = {}
    for item, found in zip(with_text, matches, strict=True):
        for match in found:  # most alike first; skip items deleted since they were indexed
            if match.item_id in stories_of:
                result[item.id] = (stories_of[match.item_id], match.score, match.item_id)
                break
    return result


def settle_leads(conn: Connection, story_ids: Iterable[int], now: datetime) -> None:
    """Make each story's lead its item from the highest-priority source, earliest first."""
    ids = sorted(story_ids)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = conn.execute(
            select(
                items.c.id,
                items.c.story_id,
                sources.c.priority,
                func.coalesce(items.c.published_at, items.c.first_seen_at).label("at"),
            )
            .join(sources, sources.c.id == items.c.source_id)
            .where(items.c.story_id.in_(chunk))
        ).all()
        best: dict[int, tuple[int, datetime, int]] = {}
        for row in rows:
            rank = (-row.priority, _aware(row.at), row.id)
            if row.story_id not in best or rank < best[row.story_id]:
                best[row.story_id] = rank
        current = dict(
            conn.execute(
                select(stories.c.id, stories.c.primary_item_id).where(stories.c.id.in_(chunk))
            ).all()
        )
        moves = [
            {"sid": story_id, "lead": rank[2]}
            for story_id, rank in best.items()
            if current.get(story_id) != rank[2]
        ]
        if moves:
            conn.execute(
                update(stories)
                .where(stories.c.id == bindparam("sid"))
                .values(primary_item_id=bindparam("lead"), updated_at=now),
                moves,
            )


def detach(conn: Connection, item_id: int, now: datetime) -> int | None:
    """Split an item off into a story of its own, for good (an editor undoing a wrong merge)."""
    old = conn.execute(select(items.c.story_id).where(items.c.id == item_id)).first()
    if old is None:
        return None
    story_id = int(
        conn.execute(
            stories.insert()
            .values(primary_item_id=item_id, created_at=now, updated_at=now)
            .returning(stories.c.id)
        ).scalar_one()
    )
    conn.execute(
        update(items)
        .where(items.c.id == item_id)
        .values(story_id=story_id, story_reason={"by": "editor"}, story_pinned=True)
    )
    if old.story_id is not None:
        tidy(conn, now)
        settle_leads(conn, [old.story_id], now)
    return story_id


def settle_all(conn: Connection, now: datetime) -> None:
    """Choose every story's lead again (after source priorities changed)."""
    settle_leads(conn, conn.execute(select(stories.c.id)).scalars().all(), now)


def lock(conn: Connection) -> None:
    serialise(conn, LOCK)


def tidy(conn: Connection, now: datetime) -> None:
    """After items were deleted: drop stories left empty, and find new leads for the others."""
    has_items = select(items.c.id).where(items.c.story_id == stories.c.id).exists()
    conn.execute(delete(stories).where(~has_items))
    lead_exists = select(items.c.id).where(items.c.id == stories.c.primary_item_id).exists()
    orphaned = conn.execute(select(stories.c.id).where(~lead_exists)).scalars().all()
    settle_leads(conn, orphaned, now)
