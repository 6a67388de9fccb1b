"""Items: every entry of every source stored once, updated in place when the publisher edits it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import chain
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Dialect,
    Row,
    Select,
    Text,
    bindparam,
    case,
    delete,
    func,
    select,
    tuple_,
    union_all,
    update,
)

from aggregator.feed.urls import canonical_url
from aggregator.storage.dialect import insert as _insert
from aggregator.storage.tables import item_topics, items, pruned_keys, stories, time_writer
from aggregator.types import (
    ArticleFetch,
    Enclosure,
    Entry,
    Filer,
    Filing,
    Item,
    ItemDetails,
    Refiling,
    SaveReport,
    Selection,
    StoryMember,
)

Cursor = tuple[datetime, int]  # (first seen, item id): where a page of items resumes

_CHUNK = 500  # keys per IN (...) query: well under SQLite's bound-parameter limit


MAX_REVISIONS = 50


def content_hash(entry: Entry) -> str:
    """A digest of what a reader sees (`Entry.digest`)."""
    return entry.digest


def columns_of(entry: Entry) -> dict[str, Any]:
    return {
        "guid": entry.guid,
        "url": entry.link,
        "canonical_url": entry.canonical_link,
        "title": entry.title,
        "summary": entry.summary,
        "content": entry.content,
        "authors": list(entry.authors),
        "categories": list(entry.categories),
        "enclosures": [
            {"url": e.url, "type": e.type, "length": e.length} for e in entry.enclosures
        ],
        "language": entry.language,
        "image": entry.image,
        "published_at": entry.published,
        "updated_at": entry.updated,
        "duration": entry.duration,
        "explicit": entry.explicit,
        "content_hash": content_hash(entry),
    }


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


@dataclass(frozen=True)
class NewItem:
    """An item just inserted, for linking it to a story in the same transaction."""

    id: int
    source_id: str
    entry: Entry
    filing: Filing
    first_seen_at: datetime

    @property
    def when(self) -> datetime:
        return self.entry.published or self.first_seen_at


def _filing_columns(filing: Filing) -> dict[str, Any]:
    return {
        "section_id": filing.section_id,
        "section_reason": dict(filing.section_reason) if filing.section_reason else None,
        "fingerprint": filing.fingerprint,
    }


# The columns of a new item, in the order `insert_rows` binds them.
_ROW = (
    "source_id", "key", "guid", "url", "canonical_url", "title", "summary", "content", "authors",
    "categories", "enclosures", "language", "image", "published_at", "updated_at",
    "content_hash", "first_seen_at", "last_seen_at", "changed_at", "revisions", "story_id",
    "story_reason", "story_pinned", "section_id", "section_reason", "fingerprint", "duration",
    "explicit",
)  # fmt: skip
_JSON_AT = [
    _ROW.index(name)
    for name in ("authors", "categories", "enclosures", "story_reason", "section_reason")
]
_WHEN_AT = [
    _ROW.index(name)
    for name in ("published_at", "updated_at", "first_seen_at", "last_seen_at", "changed_at")
]
# Rows a statement, largest first: a batch goes in as few statements as these sizes make up
# (25 rows: 16 + 4 + 4 + 1). The driver keeps each distinct statement it ran prepared (SQLite's
# cache holds 128), and a prepared insert of many rows is large: any count up to 100 rows made
# up to a hundred of them, 12 MiB of a first pass's peak. 64 rows: 1,792 parameters, under
# SQLite's and PostgreSQL's bounds.
_ROWS_A_STATEMENT = (64, 16, 4, 1)
_PAIRS_A_STATEMENT = 256  # (source, key) pairs a lookup, padded up to a power of two


def _json(value: Any) -> str:
    """What SQLAlchemy's JSON type writes (json.dumps), without its cost for the values most
    rows hold: nothing, or an empty list."""
    if value is None:
        return "null"
    if not value and isinstance(value, list):
        return "[]"
    return json.dumps(value)


def new_row(
    source_id: str, key: str, columns: dict[str, Any], filing: Filing, now: datetime
) -> dict[str, Any]:
    """Every column of a new item (but its id)."""
    return {
        "source_id": source_id,
        "key": key,
        "first_seen_at": now,
        "last_seen_at": now,
        "changed_at": now,
        "revisions": 0,
        "story_id": None,
        "story_reason": None,
        "story_pinned": False,
        **columns,
        **_filing_columns(filing),
    }


def _pieces(count: int) -> Iterator[tuple[int, int]]:
    """(start, rows) of the statements `count` rows go in, each of a size in _ROWS_A_STATEMENT."""
    start = 0
    for size in _ROWS_A_STATEMENT:
        while count - start >= size:
            yield start, size
            start += size


def _strings(values: tuple[str, ...]) -> str:
    """What json.dumps writes of a list of strings (an entry's authors or categories)."""
    return "[" + ", ".join(map(_quoted, values)) + "]" if values else "[]"


def new_values(
    source_id: str,
    key: str,
    entry: Entry,
    filing: Filing,
    now: Any,
    when: Callable[[datetime | None], Any],
) -> list[Any]:
    """A new item's values in `_ROW` order, as SQLAlchemy's types write them (`now` written
    already): `new_row`'s columns without the dictionaries between (made for every new item of
    a first poll, they were a tenth of the poller's storing thread)."""
    enclosures = entry.enclosures
    reason = filing.section_reason
    return [
        source_id, key, entry.guid, entry.link, entry.canonical_link, entry.title,
        entry.summary, entry.content, _strings(entry.authors), _strings(entry.categories),
        json.dumps([{"url": e.url, "type": e.type, "length": e.length} for e in enclosures])
        if enclosures else "[]",
        entry.language, entry.image, when(entry.published), when(entry.updated), entry.digest,
        now, now, now, 0, None, "null", False, filing.section_id,
        json.dumps(dict(reason)) if reason else "null", filing.fingerprint, entry.duration,
        entry.explicit,
    ]  # fmt: skip


def _values(rows: Sequence[dict[str, Any]], dialect: Dialect) -> list[list[Any]]:
    """Each row's values in `_ROW` order, as SQLAlchemy's types would write them."""
    when = time_writer(dialect)
    values = []
    stamps: dict[datetime | None, Any] = {}  # most times of a batch are its `now`
    for row in rows:
        value = [row[name] for name in _ROW]
        for at in _JSON_AT:
            value[at] = _json(value[at])
        for at in _WHEN_AT:
            moment = value[at]
            stamp = stamps.get(moment, stamps)
            if stamp is stamps:
                stamp = stamps[moment] = when(moment)
            value[at] = stamp
        values.append(value)
    return values


def insert_rows(conn: Connection, rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """Insert new items (`new_row`'s dictionaries) at the driver, several to a statement; their
    ids by (source, key). Saves go by `new_values` and `insert_values`; this is the way by
    column names that a test holds to SQLAlchemy's own insert, and `new_values` to this.

    SQLAlchemy's per-value processing (its JSON, time zone and date types) was a sixth of the
    poller's time in a first poll; the values here are what those types write (a test holds
    the two ways to the same stored rows on both databases)."""
    return insert_values(conn, _values(rows, conn.dialect))


def insert_values(conn: Connection, values: Sequence[Sequence[Any]]) -> dict[tuple[str, str], int]:
    """`insert_rows` for values in `_ROW` order (`new_values`)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    ids: dict[tuple[str, str], int] = {}
    one = f"({', '.join([mark] * len(_ROW))})"
    for start, count in _pieces(len(values)):
        chunk = values[start : start + count]
        statement = (
            f"INSERT INTO items ({', '.join(_ROW)}) VALUES {', '.join([one] * len(chunk))} "
            f"RETURNING id, source_id, key"
        )
        flat = tuple(chain.from_iterable(chunk))
        ids.update(
            ((source_id, key), item_id)
            for item_id, source_id, key in conn.exec_driver_sql(statement, flat)
        )
    return ids


def _set_topics(conn: Connection, filed: Sequence[tuple[int, Filing]], replace: bool) -> None:
    ids = [item_id for item_id, _ in filed]
    if replace:
        for chunk in _chunks(ids):
            conn.execute(delete(item_topics).where(item_topics.c.item_id.in_(chunk)))
    rows = [
        (item_id, topic_id, reason)
        for item_id, filing in filed
        for topic_id, reason in filing.topics.items()
    ]
    if rows:
        # At the driver: SQLAlchemy's work per row (its JSON processor and parameter mapping)
        # was a tenth of a first poll's time in the poller. The reasons are already the JSON
        # text that processor writes (json.dumps); both drivers let the column take the text.
        marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        conn.exec_driver_sql(
            f"INSERT INTO item_topics (item_id, topic_id, reason) "
            f"VALUES ({marker}, {marker}, {marker})",
            rows,
        )


def distinct(entries: Iterable[Entry]) -> dict[str, Entry]:
    """The batch by key; an entry repeated in it is stored once (the first wins)."""
    batch: dict[str, Entry] = {}
    for entry in entries:
        batch.setdefault(entry.key, entry)
    return batch


def stored(
    conn: Connection, source_id: str, keys: Sequence[str]
) -> tuple[dict[str, tuple[int, str, int]], set[str]]:
    """The source's stored keys among `keys` (-> id, content hash, revisions), and those that
    retention removed (never stored again)."""
    known, gone = stored_many(conn, [(source_id, keys)])
    return {key: held for (_, key), held in known.items()}, {key for _, key in gone}


def stored_many(
    conn: Connection, wanted: Sequence[tuple[str, Sequence[str]]]
) -> tuple[dict[tuple[str, str], tuple[int, str, int]], set[tuple[str, str]]]:
    """`stored` for several sources' keys, by (source, key), two queries for them all: the
    pairs are joined to the unique index (a row-value IN made SQLite scan the table)."""
    pairs = [(source_id, key) for source_id, keys in wanted for key in keys]
    known: dict[tuple[str, str], tuple[int, str, int]] = {}
    gone: set[tuple[str, str]] = set()
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    for start in range(0, len(pairs), _PAIRS_A_STATEMENT):
        chunk = pairs[start : start + _PAIRS_A_STATEMENT]
        # padded with its last pair to a power of two: a few distinct statements (see _pieces)
        chunk += chunk[-1:] * ((1 << (len(chunk) - 1).bit_length()) - len(chunk))
        flat = tuple(value for pair in chunk for value in pair)
        wanted_rows = (
            f"WITH wanted (s, k) AS (VALUES {', '.join([f'({mark}, {mark})'] * len(chunk))})"
        )
        for source_id, key, item_id, content_hash, revisions in conn.exec_driver_sql(
            f"{wanted_rows} SELECT i.source_id, i.key, i.id, i.content_hash, i.revisions "
            "FROM wanted JOIN items i ON i.source_id = wanted.s AND i.key = wanted.k",
            flat,
        ):
            known[(source_id, key)] = (item_id, content_hash, revisions)
        gone.update(
            (source_id, key)
            for source_id, key in conn.exec_driver_sql(
                f"{wanted_rows} SELECT p.source_id, p.key FROM wanted "
                "JOIN pruned_keys p ON p.source_id = wanted.s AND p.key = wanted.k",
                flat,
            )
        )
    return known, gone


def _filed(filer: Filer | None, source_id: str, entries: list[Entry]) -> list[Filing]:
    if not entries:
        return []
    return filer.file_all(source_id, entries) if filer else [Filing() for _ in entries]


def insert_order(entries: Sequence[Entry], now: datetime) -> list[int]:
    """Positions of new entries in the order they are inserted: ids follow publication (a feed
    lists its newest first, so the oldest goes in first; undated ones last, newest first)."""
    return sorted(
        range(len(entries)),
        key=lambda n: (entries[n].published is None, entries[n].published or now, -n),
    )


def save(
    conn: Connection,
    source_id: str,
    entries: Iterable[Entry],
    now: datetime,
    filer: Filer | None = None,
    before_insert: Callable[[], None] | None = None,
) -> tuple[SaveReport, list[NewItem]]:
    """Insert new entries, update changed ones in place, touch the rest; keyed by (source, key).

    An entry repeated in one batch is stored once (the first wins), so a feed that lists the same
    guid twice never yields two items. Keys removed by retention are never stored again. An item
    is revised at most MAX_REVISIONS times, so a feed whose entries change on every fetch cannot
    churn forever.
    """
    return save_many(conn, [(source_id, entries, now, filer)], before_insert)[0]


Batch = tuple[str, Iterable[Entry], datetime, Filer | None]  # source, entries, now, filer


def save_many(
    conn: Connection, batches: Sequence[Batch], before_insert: Callable[[], None] | None = None
) -> list[tuple[SaveReport, list[NewItem]]]:
    """`save` for several sources' batches (different sources) in one go: what is stored of them
    is read in one query, and their new items go in together, a statement and its ids for up to
    a hundred rows; as if saved one after the other, in order (each batch's ids follow the
    previous one's). A group of eight polls made 40 statements, each a tenth of a millisecond
    of SQLAlchemy's on the poller's storing thread."""
    wanted = [(source_id, distinct(entries)) for source_id, entries, _, _ in batches]
    known, gone = stored_many(conn, [(source_id, list(batch)) for source_id, batch in wanted])
    sorted_out = [
        _sort_out(conn, source_id, batch, known, gone, now, filer)
        for (source_id, batch), (_, _, now, filer) in zip(wanted, batches, strict=True)
    ]
    inserts = [row for one in sorted_out for row in one.inserts]
    ids: dict[tuple[str, str], int] = {}
    if inserts:
        if before_insert is not None:
            before_insert()  # the story lock: taken only by saves that add items
        # Rows come back keyed, not in order: asking for parameter order made SQLAlchemy
        # insert row by row on SQLite; unordered, the batch goes in a few statements.
        ids = insert_values(conn, inserts)
    topics: list[tuple[int, Filing]] = []
    for one in sorted_out:
        one.new = [ids[(one.source_id, row[1])] for row in one.inserts]
        topics.extend(zip(one.new, (filing for _, filing in one.inserted), strict=True))
    _set_topics(conn, topics, False)
    results = []
    for one in sorted_out:
        if one.changes:
            changes = one.changes
            conn.execute(  # one filer for the call: every row sets the same columns
                update(items)
                .where(items.c.id == bindparam("item_id"))
                .values(
                    {
                        **{
                            name: _PAGE_KEEPS.get(name, bindparam(name))
                            for name in changes[0]
                            if name != "item_id"
                        },
                        "search_pending": True,  # its text changed: the search index reads it
                    }
                ),
                changes,
            )
            _set_topics(conn, one.changed_filings, True)
        for chunk in _chunks(one.unchanged):
            conn.execute(update(items).where(items.c.id.in_(chunk)).values(last_seen_at=one.now))
        fresh = [
            NewItem(item_id, one.source_id, entry, filing, one.now)
            for item_id, (entry, filing) in zip(one.new, one.inserted, strict=True)
        ]
        reported = [ids[(one.source_id, key)] for key in one.in_batch_order]
        changed = [change["item_id"] for change in one.changes]
        results.append((SaveReport(tuple(reported), tuple(changed), len(one.unchanged)), fresh))
    return results


@dataclass
class _SortedOut:
    """One batch sorted out against what is stored: its new rows (in the order inserted), its
    edits and its unchanged items."""

    source_id: str
    now: datetime
    inserts: list[list[Any]]  # `new_values`
    inserted: list[tuple[Entry, Filing]]
    in_batch_order: list[str]
    changes: list[dict[str, Any]]
    changed_filings: list[tuple[int, Filing]]
    unchanged: list[int]
    new: list[int] = field(default_factory=list)


def _sort_out(
    conn: Connection,
    source_id: str,
    batch: dict[str, Entry],
    stored_items: dict[tuple[str, str], tuple[int, str, int]],
    gone: set[tuple[str, str]],
    now: datetime,
    filer: Filer | None,
) -> _SortedOut:
    arriving: list[tuple[str, Entry]] = []
    edited: list[tuple[Entry, dict[str, Any]]] = []
    unchanged: list[int] = []
    for key, entry in batch.items():
        if (source_id, key) in gone:
            continue
        known = stored_items.get((source_id, key))
        if known is None:
            arriving.append((key, entry))
            continue
        item_id, old_hash, revisions = known
        if old_hash != content_hash(entry) and revisions < MAX_REVISIONS:
            edited.append(
                (
                    entry,
                    {
                        "item_id": item_id,
                        "last_seen_at": now,
                        "changed_at": now,
                        "revisions": revisions + 1,
                        **columns_of(entry),
                    },
                )
            )
        else:
            unchanged.append(item_id)
    # filed together: a filer makes a document's fingerprints in one go
    new_filings = _filed(filer, source_id, [entry for _, entry in arriving])
    inserted = [(entry, filing) for (_, entry), filing in zip(arriving, new_filings, strict=True)]
    when = time_writer(conn.dialect)
    stamp = when(now)
    inserts = [
        new_values(source_id, key, entry, filing, stamp, when)
        for (key, entry), filing in zip(arriving, new_filings, strict=True)
    ]
    changes = [change for _, change in edited]
    changed_filings: list[tuple[int, Filing]] = []
    if filer is not None and edited:  # an edit can change what the item is about
        pages = _article_of(conn, [change["item_id"] for _, change in edited])
        as_read = [  # filed on its article page's text and filing, where it has them
            _with_page(entry, pages.get(change["item_id"])) for entry, change in edited
        ]
        for (_, change), filing in zip(edited, filer.file_all(source_id, as_read), strict=True):
            change.update(_filing_columns(filing))
            changed_filings.append((change["item_id"], filing))
    in_batch_order = [key for key, _ in arriving]
    order = insert_order([entry for entry, _ in inserted], now)
    return _SortedOut(
        source_id,
        now,
        [inserts[n] for n in order],
        [inserted[n] for n in order],
        in_batch_order,
        changes,
        changed_filings,
        unchanged,
    )


def prune(conn: Connection, older_than: datetime, now: datetime) -> int:
    """Delete items last seen in their feed before `older_than`, remembering their keys."""
    doomed = conn.execute(
        select(items.c.id, items.c.source_id, items.c.key).where(items.c.last_seen_at < older_than)
    ).all()
    for chunk in _chunks(doomed):
        conn.execute(
            _insert(conn, pruned_keys)
            .values([{"source_id": r.source_id, "key": r.key, "pruned_at": now} for r in chunk])
            .on_conflict_do_nothing()
        )
        conn.execute(delete(items).where(items.c.id.in_([r.id for r in chunk])))
    return len(doomed)


def _item(row: Row[Any], topics: Sequence[str]) -> Item:
    m = row._mapping
    entry = Entry(
        key=m["key"],
        title=m["title"],
        link=m["url"],
        canonical_link=m["canonical_url"],
        guid=m["guid"],
        summary=m["summary"],
        content=m["article"] or m["content"],  # a full_text source's article page, once read
        authors=tuple(m["authors"]),
        categories=tuple(m["categories"]),
        enclosures=tuple(
            Enclosure(e["url"], e.get("type") or "", e.get("length")) for e in m["enclosures"]
        ),
        language=m["language"],
        image=m["image"],
        published=m["published_at"],
        updated=m["updated_at"],
        publisher=tuple((str(kind), str(term)) for kind, term in m["publisher"] or ()),
        duration=m["duration"],
        explicit=m["explicit"],
    )
    return Item(
        id=m["id"],
        source_id=m["source_id"],
        entry=entry,
        first_seen_at=m["first_seen_at"],
        last_seen_at=m["last_seen_at"],
        changed_at=m["changed_at"],
        section_id=m["section_id"],
        story_id=m["story_id"],
        topics=tuple(topics),
        article_error=m["article_error"],
    )


def _with_topics(conn: Connection, rows: Sequence[Row[Any]]) -> list[Item]:
    ids = [row.id for row in rows]
    topics: dict[int, list[str]] = {item_id: [] for item_id in ids}
    for chunk in _chunks(ids):
        for link in conn.execute(
            select(item_topics.c.item_id, item_topics.c.topic_id)
            .where(item_topics.c.item_id.in_(chunk))
            .order_by(item_topics.c.topic_id)
        ):
            topics[link.item_id].append(link.topic_id)
    return [_item(row, topics[row.id]) for row in rows]


def topic_reasons(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {item_id: {} for item_id in ids}
    for chunk in _chunks(list(ids)):
        for link in conn.execute(
            select(item_topics.c.item_id, item_topics.c.topic_id, item_topics.c.reason)
            .where(item_topics.c.item_id.in_(chunk))
            .order_by(item_topics.c.topic_id)
        ):
            found[link.item_id][link.topic_id] = link.reason
    return found


def details(conn: Connection, item_id: int) -> ItemDetails | None:
    rows = conn.execute(select(items).where(items.c.id == item_id)).all()
    if not rows:
        return None
    row = rows[0]
    item = _with_topics(conn, rows)[0]
    members: list[StoryMember] = []
    if row.story_id is not None:
        lead = conn.execute(
            select(stories.c.primary_item_id).where(stories.c.id == row.story_id)
        ).scalar()
        others = conn.execute(
            select(items).where(items.c.story_id == row.story_id).order_by(items.c.id)
        ).all()
        members = [
            StoryMember(member, other.story_reason or {}, member.id == lead)
            for member, other in zip(_with_topics(conn, others), others, strict=True)
        ]
    return ItemDetails(
        item,
        row.section_reason,
        topic_reasons(conn, [item_id])[item_id],
        row.story_reason,
        bool(row.story_pinned),
        tuple(members),
    )


def find(conn: Connection, url: str) -> list[int]:
    """Items whose link (or canonical link) is this URL, newest first."""
    canonical = canonical_url(url) or url
    rows = conn.execute(
        select(items.c.id)
        .where((items.c.url == url) | (items.c.canonical_url == canonical))
        .order_by(items.c.id.desc())
    )
    return list(rows.scalars())


def batch_after(conn: Connection, after_id: int, limit: int) -> list[Refiling]:
    """The next items in id order with their reasons, for re-applying the rules to all."""
    rows = conn.execute(
        select(items).where(items.c.id > after_id).order_by(items.c.id).limit(limit)
    ).all()
    reasons = topic_reasons(conn, [row.id for row in rows])
    return [
        Refiling(item, row.section_reason, reasons[row.id])
        for item, row in zip(_with_topics(conn, rows), rows, strict=True)
    ]


def refile(conn: Connection, filings: Sequence[tuple[int, Filing]]) -> None:
    """Rewrite the section and topics of items (not their text or fingerprint)."""
    if not filings:
        return
    conn.execute(
        update(items)
        .where(items.c.id == bindparam("item_id"))
        .values(section_id=bindparam("section"), section_reason=bindparam("reason")),
        [
            {
                "item_id": item_id,
                "section": filing.section_id,
                "reason": dict(filing.section_reason) if filing.section_reason else None,
            }
            for item_id, filing in filings
        ],
    )
    _set_topics(conn, filings, True)


@dataclass(frozen=True)
class Candidate:
    """An item a selection found, with its story's lead and the (source, key) that opened it."""

    item: Item
    lead: int | None
    opener: tuple[str, str] | None


MAX_SPLIT = 16  # sections (or sources) of a filter read as separate index seeks, at most


def _filtered(query: Select[Any], selection: Selection, before: Cursor | None) -> Select[Any]:
    """`query` narrowed to the selection and to the items after `before`.

    The cursor is a row-value bound, `(first_seen_at, id) < (moment, id)`, which both databases
    turn into a seek on an index ending in (first_seen_at, id): a deep page costs what the first
    does. (Its spelled-out twin, an OR of two comparisons, is no range: SQLite walked every newer
    item to reach the cursor.)
    """
    if selection.seen_since is not None:
        query = query.where(items.c.first_seen_at >= selection.seen_since)
    if selection.sections:
        query = query.where(items.c.section_id.in_(selection.sections))
    if selection.sources:
        query = query.where(items.c.source_id.in_(selection.sources))
    if selection.topics:
        query = query.where(
            select(item_topics.c.item_id)
            .where(
                item_topics.c.item_id == items.c.id,
                item_topics.c.topic_id.in_(selection.topics),
            )
            .exists()
        )
    if before is not None:
        query = query.where(tuple_(items.c.first_seen_at, items.c.id) < before)
    return query


_NEWEST_FIRST = (items.c.first_seen_at.desc(), items.c.id.desc())


def _split(selection: Selection) -> list[Selection]:
    """The selection as one selection per section (or source) when it names several, so that
    each is one seek in the index on (section_id or source_id, first_seen_at, id); else as is.

    `section_id IN (a, b) ORDER BY first_seen_at` cannot be read in order from one index range,
    so a database may sort every matching item; a page per value, merged, stays a page's work.
    """
    if len(selection.sections) == 1 or len(selection.sources) == 1:
        return [selection]
    if 1 < len(selection.sections) <= MAX_SPLIT:
        return [replace(selection, sections=(value,)) for value in selection.sections]
    if 1 < len(selection.sources) <= MAX_SPLIT:
        return [replace(selection, sources=(value,)) for value in selection.sources]
    return [selection]


def page_query(selection: Selection, limit: int, before: Cursor | None) -> Select[Any]:
    """The statement `select_page` runs (tests read its plan)."""
    query = (
        select(items, stories.c.primary_item_id, stories.c.first_source_id, stories.c.first_key)
        .outerjoin(stories, stories.c.id == items.c.story_id)
        .order_by(*_NEWEST_FIRST)
        .limit(limit)
    )
    parts = _split(selection)
    if len(parts) == 1:
        return _filtered(query, selection, before)
    # each part's page whole (joining back on ids lets a planner scan every item for them)
    pages = union_all(*(select(_filtered(query, part, before).subquery()) for part in parts))
    merged = pages.subquery()
    return select(merged).order_by(merged.c.first_seen_at.desc(), merged.c.id.desc()).limit(limit)


def select_page(
    conn: Connection, selection: Selection, limit: int, before: Cursor | None
) -> list[Candidate]:
    """Items matching the selection's sections, sources and topics, newest first by when they
    were first seen, with their story's lead; `before` continues after the last one returned."""
    rows = conn.execute(page_query(selection, limit, before)).all()
    return [
        Candidate(
            item,
            row.primary_item_id,
            (row.first_source_id, row.first_key) if row.first_key is not None else None,
        )
        for item, row in zip(_with_topics(conn, rows), rows, strict=True)
    ]


def story_members(conn: Connection, story_ids: Sequence[int]) -> dict[int, list[Item]]:
    found: dict[int, list[Item]] = {story_id: [] for story_id in story_ids}
    for chunk in _chunks(list(story_ids)):
        rows = conn.execute(
            select(items).where(items.c.story_id.in_(chunk)).order_by(items.c.id)
        ).all()
        for item in _with_topics(conn, rows):
            assert item.story_id is not None
            found[item.story_id].append(item)
    return found


def by_ids(conn: Connection, item_ids: Sequence[int]) -> list[Item]:
    """These items, in this order (ids no longer stored left out)."""
    found: dict[int, Item] = {}
    for chunk in _chunks(list(item_ids)):
        rows = conn.execute(select(items).where(items.c.id.in_(chunk))).all()
        found.update((item.id, item) for item in _with_topics(conn, rows))
    return [found[i] for i in item_ids if i in found]


def get(conn: Connection, item_id: int) -> Item | None:
    rows = conn.execute(select(items).where(items.c.id == item_id)).all()
    return _with_topics(conn, rows)[0] if rows else None


def recent(conn: Connection, limit: int = 50, source_id: str | None = None) -> list[Item]:
    """Newest first by when the service first saw them."""
    query = select(items).order_by(items.c.first_seen_at.desc(), items.c.id.desc()).limit(limit)
    if source_id is not None:
        query = query.where(items.c.source_id == source_id)
    return _with_topics(conn, conn.execute(query).all())


def publication_times(conn: Connection, source_id: str, limit: int = 20) -> list[datetime]:
    """When the source's latest items were published (first seen, when undated)."""
    moment = func.coalesce(items.c.published_at, items.c.first_seen_at)
    rows = conn.execute(
        select(moment.label("at"))
        .where(items.c.source_id == source_id)
        .order_by(
            func.coalesce(items.c.published_at, items.c.first_seen_at).desc(), items.c.id.desc()
        )
        .limit(limit)
    )
    return [row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC) for row in rows]


@dataclass(frozen=True)
class SourceCounts:
    stored: int
    last_day: int
    last_week: int


def counts_by_source(conn: Connection, now: datetime) -> dict[str, SourceCounts]:
    """Stored items, and items first seen in the last day and week, per source."""
    day, week = now - timedelta(days=1), now - timedelta(days=7)
    rows = conn.execute(
        select(
            items.c.source_id,
            func.count(),
            func.sum(case((items.c.first_seen_at >= day, 1), else_=0)),
            func.sum(case((items.c.first_seen_at >= week, 1), else_=0)),
        ).group_by(items.c.source_id)
    )
    return {row[0]: SourceCounts(int(row[1]), int(row[2] or 0), int(row[3] or 0)) for row in rows}


def count(conn: Connection, source_id: str | None = None) -> int:
    query = select(func.count()).select_from(items)
    if source_id is not None:
        query = query.where(items.c.source_id == source_id)
    return int(conn.execute(query).scalar_one())


ARTICLE_TRIES = 3  # fetches of an article page that failed for a while, before it is let be
_TRANSIENT = bindparam("transient", type_=Boolean)


# What a feed's edit writes where an article page said more: the page's date, picture and
# update time stay unless the feed now gives its own; its language and canonical link stay.
_READ = items.c.article_at.is_not(None)
_PAGE_KEEPS: dict[str, Any] = {
    name: func.coalesce(bindparam(name, type_=items.c[name].type), items.c[name])
    for name in ("published_at", "updated_at", "image")
} | {
    name: case((_READ, items.c[name]), else_=bindparam(name, type_=items.c[name].type))
    for name in ("language", "canonical_url")
}


def _article_of(
    conn: Connection, item_ids: Sequence[int]
) -> dict[int, tuple[str | None, tuple[tuple[str, str], ...]]]:
    """The article text and publisher's filing of those items that have them."""
    found: dict[int, tuple[str | None, tuple[tuple[str, str], ...]]] = {}
    for chunk in _chunks(item_ids):
        for row in conn.execute(
            select(items.c.id, items.c.article, items.c.publisher).where(
                items.c.id.in_(chunk), items.c.article_at.is_not(None)
            )
        ):
            pairs = tuple((str(k), str(t)) for k, t in row.publisher or ())
            found[row.id] = (row.article, pairs)
    return found


def _with_page(entry: Entry, page: tuple[str | None, tuple[tuple[str, str], ...]] | None) -> Entry:
    if page is None:
        return entry
    article, publisher = page
    return replace(entry, content=article or entry.content, publisher=publisher)


def pending_articles(conn: Connection, source_id: str, limit: int) -> list[Item]:
    """A source's items whose article page has not been fetched yet, the latest published
    first."""
    rows = conn.execute(
        select(items)
        .where(
            items.c.source_id == source_id,
            items.c.article_at.is_(None),
            items.c.article_tries < ARTICLE_TRIES,
            items.c.url.is_not(None),
        )
        .order_by(items.c.first_seen_at.desc(), items.c.id.desc())
        .limit(limit)
    ).all()
    return _with_topics(conn, rows)


def record_articles(conn: Connection, fetched: Sequence[ArticleFetch]) -> None:
    """Keep what article pages gave: the text, the publisher's filing, the dates and image where
    the feed gave none, the page's language and canonical address where it gives them. An item
    whose page another worker recorded first keeps that."""
    if not fetched:
        return
    conn.execute(
        update(items)
        .where(items.c.id == bindparam("item_id"), items.c.article_at.is_(None))
        .values(
            article=bindparam("html", type_=Text),
            # a passing failure leaves the page to fetch again, up to ARTICLE_TRIES times
            article_at=case(
                (_TRANSIENT & (items.c.article_tries + 1 < ARTICLE_TRIES), None),
                else_=bindparam("at", type_=items.c.article_at.type),
            ),
            article_tries=items.c.article_tries + case((_TRANSIENT, 1), else_=0),
            article_error=bindparam("error", type_=Text),
            publisher=bindparam("publisher", type_=items.c.publisher.type),
            published_at=func.coalesce(
                items.c.published_at, bindparam("published", type_=items.c.published_at.type)
            ),
            updated_at=func.coalesce(
                items.c.updated_at, bindparam("modified", type_=items.c.updated_at.type)
            ),
            language=func.coalesce(bindparam("language", type_=Text), items.c.language),
            image=func.coalesce(items.c.image, bindparam("image", type_=Text)),
            canonical_url=func.coalesce(bindparam("canonical", type_=Text), items.c.canonical_url),
            search_pending=True,  # the article is searched too
        ),
        [
            {
                "item_id": f.item_id,
                "html": f.html,
                "at": f.fetched_at,
                "error": f.error,
                "transient": f.transient,
                "publisher": [list(pair) for pair in f.publisher] or None,
                "published": f.published,
                "modified": f.modified,
                "language": f.language,
                "image": f.image,
                "canonical": canonical_url(f.canonical),
            }
            for f in fetched
        ],
    )
