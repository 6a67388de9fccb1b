"""Full-text search over stored items: SQLite FTS5 or PostgreSQL's tsvector, one behaviour.

The index is kept off the poll's path. Indexing 25,000 news items costs SQLite about 4 s of CPU
(FTS5 tokenising 250 words an item), close to half of what a first pass of 1,000 sources costs
everything else; so saving an item only marks it (`items.search_pending`, true for a new row by
the column's default, set again when its text changes), and `index_pending` indexes marked items
in batches, from a job of the service. Text is folded in Python (the matcher's folding) before
either database sees it: FTS5 is told to split words only (unicode61 without diacritic removal,
marks kept in their words: it then splits exactly as the folding does), and PostgreSQL is given
its tsvector and tsquery as literals, never through its own parser. So a query finds the same
items on both, but for one limit: PostgreSQL keeps 256 positions of a word, so a phrase holding
a word after its 256th use in one item is found on SQLite only. Deleting an item removes its
row (a trigger on SQLite, a cascading key on PostgreSQL).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, text, true, update
from sqlalchemy.exc import OperationalError

from aggregator.exceptions import SearchRefusedError
from aggregator.storage.tables import items

INDEX_TABLE = "item_search"
# words of an item indexed (title first): PostgreSQL's positions stop at 16,383, and both
# databases must index the same words; it keeps 256 positions of one word, FTS5 every one
MAX_WORDS = 16_000
MAX_POSITIONS = 256
MAX_LEXEME = 2046  # bytes of one word PostgreSQL takes
COUNT_LIMIT = 100_000
# matches read to find a page of stories: copies of one story collapse into one result
SCAN_FACTOR = 3
MAX_SCAN = 2_000
TITLE_WEIGHT = 4.0  # a word in the title counts this many times one in the body (SQLite's bm25)

_SQLITE_DDL = (
    f"CREATE VIRTUAL TABLE {INDEX_TABLE} USING fts5("
    # marks belong to the word they sit in (a Hindi vowel sign), as in the folded text
    "title, body, tokenize = \"unicode61 remove_diacritics 0 categories 'L* N* Co M*'\")",
    f"CREATE TRIGGER {INDEX_TABLE}_forget AFTER DELETE ON items BEGIN "
    f"DELETE FROM {INDEX_TABLE} WHERE rowid = old.id; END",
)
_POSTGRESQL_DDL = (
    f"CREATE TABLE {INDEX_TABLE} ("
    "item_id BIGINT PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE, "
    "document TSVECTOR NOT NULL)",
    f"CREATE INDEX ix_{INDEX_TABLE}_document ON {INDEX_TABLE} USING GIN (document)",
)
_DROP = {
    "sqlite": (f"DROP TRIGGER IF EXISTS {INDEX_TABLE}_forget", f"DROP TABLE {INDEX_TABLE}"),
    "postgresql": (f"DROP TABLE {INDEX_TABLE}",),
}


def is_index_table(name: str | None) -> bool:
    """Whether a table is the index or one of FTS5's own tables behind it (none of them is a
    SQLAlchemy table: Alembic's comparison leaves them out)."""
    return name is not None and (name == INDEX_TABLE or name.startswith(f"{INDEX_TABLE}_"))


def create(conn: Connection) -> None:
    """Make the index (the migration and a new database both call this)."""
    ddl = _POSTGRESQL_DDL if conn.dialect.name == "postgresql" else _SQLITE_DDL
    for statement in ddl:
        conn.exec_driver_sql(statement)


def drop(conn: Connection) -> None:
    for statement in _DROP[conn.dialect.name]:
        conn.exec_driver_sql(statement)


Document = Callable[[str, str, str, str | None], tuple[str, str]]


def _words(title: str, body: str) -> tuple[list[str], list[str]]:
    """The words both databases index: the title's, then the body's up to MAX_WORDS in all."""
    heading = title.split()[:MAX_WORDS]
    return heading, body.split()[: MAX_WORDS - len(heading)]


def _quoted(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector(title: str, body: str) -> str:
    """PostgreSQL's tsvector as a literal, made here rather than by `to_tsvector`, whose parser
    splits and drops characters by the server's locale (a lone mark, a fraction digit, `1e5`)
    where the folded words keep them: the lexemes are exactly the words FTS5 indexes. The title
    is weighted A, the body B, with a position left empty between them so that no phrase runs
    from one into the other (FTS5 keeps them in separate columns)."""
    heading, text = _words(title, body)
    found: dict[str, list[str]] = {}
    for position, word in enumerate(heading, 1):
        found.setdefault(word, []).append(f"{position}A")
    for position, word in enumerate(text, len(heading) + 2):
        found.setdefault(word, []).append(f"{position}B")
    return " ".join(
        f"{_quoted(word)}:{','.join(places[:MAX_POSITIONS])}"
        for word, places in found.items()
        if len(word.encode()) <= MAX_LEXEME
    )


def index_pending(conn: Connection, limit: int, document: Document) -> int:
    """Index up to `limit` marked items, oldest first; `document(title, summary, content,
    article)` gives the (title, body) to index, as folded words. Returns how many it indexed.

    On PostgreSQL the batch is locked as it is read (FOR NO KEY UPDATE SKIP LOCKED): an edit
    saved meanwhile waits for this transaction and marks its item again, instead of being
    cleared unread, and rows another transaction holds are left for the next batch, so the
    indexer never waits on a poll's save (nor deadlocks with one)."""
    query = (
        select(items.c.id, items.c.title, items.c.summary, items.c.content, items.c.article)
        .where(items.c.search_pending)
        .order_by(items.c.id)
        .limit(limit)
    )
    postgresql = conn.dialect.name == "postgresql"
    if postgresql:
        query = query.with_for_update(key_share=True, skip_locked=True, of=items)
    rows = conn.execute(query).all()
    if not rows:
        return 0
    ids = [row.id for row in rows]
    folded = [document(row.title, row.summary, row.content, row.article) for row in rows]
    if postgresql:
        conn.execute(
            text(
                f"INSERT INTO {INDEX_TABLE} (item_id, document) "
                "VALUES (:item_id, CAST(:document AS tsvector)) "
                "ON CONFLICT (item_id) DO UPDATE SET document = excluded.document"
            ),
            [
                {"item_id": item_id, "document": tsvector(title, body)}
                for item_id, (title, body) in zip(ids, folded, strict=True)
            ],
        )
    else:
        conn.execute(
            text(f"DELETE FROM {INDEX_TABLE} WHERE rowid = :item_id"),
            [{"item_id": i} for i in ids],
        )
        values = []
        for item_id, (title, body) in zip(ids, folded, strict=True):
            heading, words = _words(title, body)
            values.append({"item_id": item_id, "title": " ".join(heading), "body": " ".join(words)})
        conn.execute(
            text(
                f"INSERT INTO {INDEX_TABLE} (rowid, title, body) VALUES (:item_id, :title, :body)"
            ),
            values,
        )
    conn.execute(
        update(items)
        .where(items.c.id == bindparam("item_id"), items.c.search_pending)
        .values(search_pending=False),
        [{"item_id": i} for i in ids],
    )
    return len(rows)


def pending(conn: Connection) -> int:
    """Items stored but not yet searchable (counted up to COUNT_LIMIT)."""
    marked = select(items.c.id).where(items.c.search_pending == true()).limit(COUNT_LIMIT)
    return int(conn.execute(select(func.count()).select_from(marked.subquery())).scalar_one())


def _late(seconds: float) -> SearchRefusedError:
    return SearchRefusedError(
        f"the search took longer than {seconds:g} s and was stopped; narrow it with more or "
        "longer words, or fewer words ending in *"
    )


@contextmanager
def deadline(conn: Connection, seconds: float) -> Iterator[None]:
    """Abort the statements run inside after `seconds` of wall-clock time: PostgreSQL by a
    statement timeout for this transaction, SQLite by a progress handler that interrupts."""
    raw = None
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}"))
        stopped = "statement timeout"
    else:
        raw = conn.connection.driver_connection
        assert raw is not None
        end = time.monotonic() + seconds
        raw.set_progress_handler(lambda: 1 if time.monotonic() > end else 0, 1000)
        stopped = "interrupted"
    try:
        yield
    except OperationalError as exc:
        if stopped in str(exc):
            raise _late(seconds) from exc
        raise
    finally:
        if raw is not None:
            raw.set_progress_handler(None, 0)


def find(
    conn: Connection,
    fts5: str,
    tsquery: str,
    limit: int,
    offset: int,
    sections: Sequence[str] = (),
    topics: Sequence[str] = (),
) -> list[int]:
    """Ids of matching items (in `sections`, on `topics`, where given), best first (ties:
    newest first), one per story: the best-ranked
    item stands for its story (the others are its "also reported by"), as in feeds. Stories are
    counted from the top, so page N is the same whichever page was read before it."""
    wanted = offset + limit
    scan = min(wanted * SCAN_FACTOR, MAX_SCAN)
    where = ""
    params: dict[str, Any] = {"limit": scan}
    if sections:
        names = [f"s{n}" for n in range(len(sections))]
        params.update(zip(names, sections, strict=True))
        where = " AND items.section_id IN (" + ", ".join(f":{n}" for n in names) + ")"
    if topics:
        names = [f"t{n}" for n in range(len(topics))]
        params.update(zip(names, topics, strict=True))
        where += (
            " AND EXISTS (SELECT 1 FROM item_topics WHERE item_topics.item_id = items.id"
            " AND item_topics.topic_id IN (" + ", ".join(f":{n}" for n in names) + "))"
        )
    if conn.dialect.name == "postgresql":
        statement = (
            f"SELECT s.item_id, items.story_id FROM {INDEX_TABLE} s "
            "JOIN items ON items.id = s.item_id, "
            "CAST(:query AS tsquery) q WHERE s.document @@ q" + where + " "
            "ORDER BY ts_rank_cd(s.document, q) DESC, s.item_id DESC LIMIT :limit"
        )
        params["query"] = tsquery
    else:
        statement = (
            f"SELECT s.rowid, items.story_id FROM {INDEX_TABLE} s "
            "JOIN items ON items.id = s.rowid "
            f"WHERE {INDEX_TABLE} MATCH :query" + where + " "
            f"ORDER BY bm25({INDEX_TABLE}, {TITLE_WEIGHT}, 1.0), s.rowid DESC LIMIT :limit"
        )
        params["query"] = fts5
    seen: set[int] = set()
    kept: list[int] = []
    for item_id, story_id in conn.execute(text(statement), params):
        key = -story_id if story_id is not None else item_id
        if key not in seen:
            seen.add(key)
            kept.append(item_id)
            if len(kept) >= wanted:
                break
    return kept[offset:wanted]
