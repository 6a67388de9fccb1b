"""Stories: each item belongs to one; alike items from any source share one.

Linking runs in the transaction that inserts the items, under a database-wide lock
(`serialise`), so two workers never open two stories for one event, and item ids enter the
story index in the order their transactions commit: each process's index catches up on what
others stored by reading the ids above its watermark.

What needs no lock is worked out before that transaction (`prepare`, in a read transaction):
filing the new and edited entries (MinHash fingerprints included), finding the stored items
they are alike, and comparing the new ones with each other. Inside, under the lock, only the
items stored since are looked at, and the rest is writing: a big batch no longer keeps every
other worker waiting while it is compared.

An item that repeats no other has no story row (story_id NULL: a story of its own); the row is
made when a second item joins. How an item joined is kept on it (`story_reason`): {"by":
"link"} (same canonical link), {"by": "text", "score": 0.82, "item": 12} (alike text), {"by":
"editor"} (split off by hand, and never merged again), or NULL: it opened the story.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update

from aggregator.storage.dialect import serialise
from aggregator.storage.items import (
    MAX_REVISIONS,
    NewItem,
    content_hash,
    distinct,
    insert_order,
    stored,
)
from aggregator.storage.tables import items, sources, stories
from aggregator.types import Entry, Filer, Filing, Match, StoryIndex, file_missing

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


@dataclass(frozen=True)
class Plan:
    """What saving a batch needs that can be worked out before the write transaction."""

    keys: tuple[str, ...]  # the new entries, in the order `items.save` inserts them
    filings: Mapping[str, tuple[Entry, Filing]]  # key -> the entry and its filing (new, edited)
    matches: tuple[tuple[Match, ...], ...]  # per new entry: alike stored items, most alike first
    within: Mapping[int, tuple[int, float]]  # new entry -> (the earlier one it repeats, score)
    watermark: int  # `matches` saw every stored item up to this id


def prepare(
    conn: Connection, source_id: str, entries: Sequence[Entry], now: datetime, filer: Filer
) -> Plan:
    """File the entries that will be new or edited and compare the new ones, with the stored
    items and with each other, in a read transaction: all the CPU work of a save."""
    batch = distinct(entries)  # as `items.save` reads and orders the batch
    known, gone = stored(conn, source_id, list(batch))
    new: list[Entry] = []
    to_file: list[Entry] = []
    for key, entry in batch.items():
        if key in gone:
            continue
        have = known.get(key)
        if have is None:
            new.append(entry)
        elif have[1] == content_hash(entry) or have[2] >= MAX_REVISIONS:
            continue
        to_file.append(entry)
    filings = {
        entry.key: (entry, filing)
        for entry, filing in zip(to_file, filer.file_all(source_id, to_file), strict=True)
    }
    new = [new[n] for n in insert_order(new, now)]
    keys = tuple(entry.key for entry in new)
    index = filer.index
    if index is None or not new:
        return Plan(keys, filings, (), {}, 0)
    catch_up(conn, index, now)
    watermark = index.watermark
    whens = [entry.published or now for entry in new]
    prints = [filings[entry.key][1].fingerprint for entry in new]
    with_text = [n for n, fp in enumerate(prints) if fp]
    fps = [prints[n] or b"" for n in with_text]
    at = [whens[n] for n in with_text]
    matches: list[tuple[Match, ...]] = [() for _ in new]
    for n, found in zip(with_text, index.similar_many(fps, at), strict=True):
        matches[n] = tuple(found)
    within = {
        with_text[i]: (with_text[pairs[0][0]], pairs[0][1])
        for i, pairs in enumerate(index.similar_within(fps, at))
        if pairs
    }
    return Plan(keys, filings, tuple(matches), within, watermark)


class Prefiled:
    """A filer handing back the filings a plan made; anything else it files itself."""

    def __init__(self, filer: Filer, plan: Plan) -> None:
        self._filer = filer
        self._plan = plan

    @property
    def index(self) -> StoryIndex | None:
        return self._filer.index

    def file(self, source_id: str, entry: Entry) -> Filing:
        return self.file_all(source_id, [entry])[0]

    def file_all(self, source_id: str, entries: Sequence[Entry]) -> list[Filing]:
        return file_missing(self._filer, source_id, entries, [self._planned(e) for e in entries])

    def _planned(self, entry: Entry) -> Filing | None:
        made = self._plan.filings.get(entry.key)
        return made[1] if made is not None and made[0] is entry else None


def prefiled(filer: Filer | None, plan: Plan | None) -> Filer | None:
    return Prefiled(filer, plan) if filer is not None and plan is not None else filer


def link(
    conn: Connection,
    fresh: Sequence[NewItem],
    index: StoryIndex | None,
    now: datetime,
    plan: Plan | None = None,
) -> set[int]:
    """Link each new item to the item it repeats: one with the same canonical link, else the
    most alike in the window (stored before, or earlier in this batch). An item that repeats
    nothing stays alone, with no story row (most items: this writes nothing for them); a story
    row is made when a second item joins, and its lead settled when it grows. Returns the new
    items that joined another's story.

    The batch may hold several sources' items (a group of saves, in the order stored): an item
    is then compared with the earlier items of other sources in the batch as with stored ones
    (the most alike of them all wins, a stored one on a tie), as if each source's items had
    been stored before the next source's were linked.

    With a `plan` made for exactly these items, only the items stored since it was made are
    compared here; without one (or if the batch turned out otherwise), everything is.
    """
    if not fresh:
        return set()
    first_id = min(item.id for item in fresh)
    if index is not None:
        catch_up(conn, index, now, below=first_id)
        stored = _by_link(conn, fresh, first_id)
        if plan is not None and plan.keys == tuple(item.entry.key for item in fresh):
            similar = _similar(conn, fresh, _since_plan(fresh, index, plan), index)
            within = {
                fresh[n].id: (fresh[other].id, score) for n, (other, score) in plan.within.items()
            }
            across: dict[int, tuple[int, float]] = {}
        else:
            similar = _similar(conn, fresh, _matches(fresh, index), index)
            within, across = _within(fresh, index)
    else:
        stored, similar, within, across = {}, {}, {}, {}
    # decide: each new item follows a stored item (and its story, if it has one), an earlier
    # new item, or nothing
    targets: dict[int, tuple[str, int, int | None]] = {}  # item -> (kind, item, story)
    reasons: dict[int, dict[str, Any]] = {}
    first_with_link: dict[str, int] = {}
    for item in fresh:
        url = item.entry.canonical_link
        if url and url in stored:
            other, story = stored[url]
            targets[item.id], reasons[item.id] = ("stored", other, story), {"by": "link"}
        elif index is not None and url and url in first_with_link:
            targets[item.id] = ("new", first_with_link[url], None)
            reasons[item.id] = {"by": "link"}
        elif item.id in across and (
            item.id not in similar or across[item.id][1] > similar[item.id][2]
        ):
            other, score = across[item.id]
            targets[item.id] = ("new", other, None)
            reasons[item.id] = {"by": "text", "score": round(score, 3), "item": other}
        elif item.id in similar:
            other, story, score = similar[item.id]
            targets[item.id] = ("stored", other, story)
            reasons[item.id] = {"by": "text", "score": round(score, 3), "item": other}
        elif item.id in within:
            other, score = within[item.id]
            targets[item.id] = ("new", other, None)
            reasons[item.id] = {"by": "text", "score": round(score, 3), "item": other}
        if url:
            first_with_link.setdefault(url, item.id)
    if not targets:
        return set()
    # group: by the stored story, or the stored item, or the first new item of a chain
    group_of: dict[int, tuple[str, int]] = {}
    for item in fresh:  # in order: an item follows only earlier ones
        target = targets.get(item.id)
        if target is None:
            group_of[item.id] = ("new", item.id)
        elif target[0] == "new":
            group_of[item.id] = group_of[target[1]]
        elif target[2] is not None:
            group_of[item.id] = ("story", target[2])
        else:
            group_of[item.id] = ("stored", target[1])
    members: dict[tuple[str, int], list[int]] = {}
    for item_id, group in group_of.items():
        members.setdefault(group, []).append(item_id)
    # a story row for every group of two or more that has none yet, led (for now) by its first
    opening = sorted(
        group[1] if group[0] == "stored" else ids[0]
        for group, ids in members.items()
        if group[0] != "story" and (group[0] == "stored" or len(ids) > 1)
    )
    story_of_group: dict[tuple[str, int], int] = {
        group: group[1] for group in members if group[0] == "story"
    }
    if opening:
        created = conn.execute(  # keyed by lead, not ordered: see items.save
            stories.insert().returning(stories.c.id, stories.c.primary_item_id),
            [{"primary_item_id": i, "created_at": now, "updated_at": now} for i in opening],
        )
        by_lead = {row.primary_item_id: row.id for row in created}
        _mark_opened(conn, list(by_lead.values()))
        for group, ids in members.items():
            lead = group[1] if group[0] == "stored" else ids[0]
            if group[0] != "story" and lead in by_lead:
                story_of_group[group] = by_lead[lead]
    writes = [
        {"item_id": item_id, "story": story_of_group[group], "reason": reasons.get(item_id)}
        for group, ids in members.items()
        if group in story_of_group
        for item_id in ids
    ]
    writes += [  # stored items that were alone and now lead a story
        {"item_id": group[1], "story": story_of_group[group], "reason": None}
        for group in members
        if group[0] == "stored"
    ]
    conn.execute(
        update(items)
        .where(items.c.id == bindparam("item_id"))
        .values(story_id=bindparam("story"), story_reason=bindparam("reason")),
        writes,
    )
    settle_leads(conn, set(story_of_group.values()), now)
    return set(targets)


def remember(index: StoryIndex, fresh: Sequence[NewItem]) -> None:
    """Add committed new items to the index (storage calls this after the commit)."""
    index.add_many(
        (item.id, item.filing.fingerprint, item.when) for item in fresh if item.filing.fingerprint
    )


def _within(
    fresh: Sequence[NewItem], index: StoryIndex
) -> tuple[dict[int, tuple[int, float]], dict[int, tuple[int, float]]]:
    """New item id -> (earlier new item, score) for items like another of the same batch: the
    most alike of the item's own source, and the most alike of another source (a group of
    saves), apart."""
    with_text = [item for item in fresh if item.filing.fingerprint]
    found = index.similar_within(
        [item.filing.fingerprint or b"" for item in with_text], [item.when for item in with_text]
    )
    own: dict[int, tuple[int, float]] = {}
    others: dict[int, tuple[int, float]] = {}
    for i, pairs in enumerate(found):
        item = with_text[i]
        for j, score in pairs:  # most alike first
            earlier = with_text[j]
            alike = own if earlier.source_id == item.source_id else others
            alike.setdefault(item.id, (earlier.id, score))
    return own, others


# Built once: a statement made per call costs its construction and cache key every time.
_BY_LINK = (
    select(items.c.canonical_url, items.c.id, items.c.story_id)
    .where(items.c.canonical_url.in_(bindparam("links", expanding=True)))
    .where(items.c.id < bindparam("below"))
    .order_by(items.c.id)
)


def _by_link(
    conn: Connection, fresh: Sequence[NewItem], below: int
) -> dict[str, tuple[int, int | None]]:
    """Canonical link -> the first stored item with it (and its story), for the new items'."""
    links = sorted({i.entry.canonical_link for i in fresh if i.entry.canonical_link})
    found: dict[str, tuple[int, int | None]] = {}
    for start in range(0, len(links), _CHUNK):
        rows = conn.execute(_BY_LINK, {"links": links[start : start + _CHUNK], "below": below})
        for row in rows:
            found.setdefault(row.canonical_url, (row.id, row.story_id))
    return found


def _matches(fresh: Sequence[NewItem], index: StoryIndex, after: int = 0) -> list[Sequence[Match]]:
    """For each new item, the alike items of the index (with an id above `after`)."""
    with_text = [n for n, item in enumerate(fresh) if item.filing.fingerprint]
    found: list[Sequence[Match]] = [() for _ in fresh]
    if not with_text:
        return found
    matches = index.similar_many(
        [fresh[n].filing.fingerprint or b"" for n in with_text],
        [fresh[n].when for n in with_text],
        after,
    )
    for n, alike in zip(with_text, matches, strict=True):
        found[n] = alike
    return found


def _since_plan(fresh: Sequence[NewItem], index: StoryIndex, plan: Plan) -> list[Sequence[Match]]:
    """The plan's matches, with those among items stored since it was made merged in."""
    found: list[Sequence[Match]] = list(plan.matches)
    if index.watermark <= plan.watermark:
        return found  # nobody stored anything in between
    for n, more in enumerate(_matches(fresh, index, plan.watermark)):
        seen = {m.item_id for m in found[n]}
        extra = [m for m in more if m.item_id not in seen]
        if extra:
            found[n] = sorted([*found[n], *extra], key=lambda m: (-m.score, m.item_id))
    return found


def _similar(
    conn: Connection,
    fresh: Sequence[NewItem],
    matches: Sequence[Sequence[Match]],
    index: StoryIndex,
) -> dict[int, tuple[int, int | None, float]]:
    """New item id -> (alike stored item, its story, score), the most alike still stored. The
    index's matches are confirmed against the stored items' full fingerprints (read in the
    query that finds their stories): the index keeps a few bits of each value only."""
    wanted = sorted({m.item_id for found in matches for m in found})
    if not wanted:
        return {}
    stored: dict[int, tuple[int | None, bytes | None]] = {}
    for start in range(0, len(wanted), _CHUNK):
        rows = conn.execute(
            select(items.c.id, items.c.story_id, items.c.fingerprint).where(
                items.c.id.in_(wanted[start : start + _CHUNK])
            )
        )
        stored.update({row.id: (row.story_id, row.fingerprint) for row in rows})
    result: dict[int, tuple[int, int | None, float]] = {}
    for item, found in zip(fresh, matches, strict=True):
        candidates = [  # skip items deleted (or left without text) since they were indexed
            (m.item_id, print_)
            for m in found
            if (print_ := stored.get(m.item_id, (None, None))[1]) is not None
        ]
        if candidates and item.filing.fingerprint:
            confirmed = index.confirm(item.filing.fingerprint, candidates)
            if confirmed:
                best = confirmed[0]
                result[item.id] = (best.item_id, stored[best.item_id][0], best.score)
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


def _mark_opened(conn: Connection, story_ids: Sequence[int]) -> None:
    """Record each new story's opener (its lead when it is made: its lowest item)."""
    ids = list(story_ids)
    opener = items.alias("opener")

    def of_lead(column: str) -> Any:
        return (
            select(opener.c[column])
            .where(opener.c.id == stories.c.primary_item_id)
            .scalar_subquery()
        )

    for start in range(0, len(ids), _CHUNK):
        conn.execute(
            update(stories)
            .where(stories.c.id.in_(ids[start : start + _CHUNK]))
            .values(first_source_id=of_lead("source_id"), first_key=of_lead("key"))
        )


def detach(conn: Connection, item_id: int, now: datetime) -> int | None:
    """Split an item off into a story of its own, for good (an editor undoing a wrong merge).

    The item keeps its own published id; if it had opened its old story, that story takes the id
    of its next item, so that two entries never share one.
    """
    old = conn.execute(
        select(items.c.story_id, items.c.source_id, items.c.key).where(items.c.id == item_id)
    ).first()
    if old is None:
        return None
    story_id = int(
        conn.execute(
            stories.insert()
            .values(primary_item_id=item_id, created_at=now, updated_at=now)
            .returning(stories.c.id)
        ).scalar_one()
    )
    _mark_opened(conn, [story_id])
    conn.execute(
        update(items)
        .where(items.c.id == item_id)
        .values(story_id=story_id, story_reason={"by": "editor"}, story_pinned=True)
    )
    if old.story_id is not None:
        tidy(conn, now)
        opened = conn.execute(
            select(stories.c.first_source_id, stories.c.first_key).where(
                stories.c.id == old.story_id
            )
        ).first()
        if opened is not None and (opened.first_source_id, opened.first_key) == (
            old.source_id,
            old.key,
        ):
            successor = (
                select(items.c.source_id, items.c.key)
                .where(items.c.story_id == old.story_id)
                .order_by(items.c.id)
                .limit(1)
            ).subquery()
            conn.execute(
                update(stories)
                .where(stories.c.id == old.story_id)
                .values(
                    first_source_id=select(successor.c.source_id).scalar_subquery(),
                    first_key=select(successor.c.key).scalar_subquery(),
                )
            )
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
