"""Full-text search over stored items: SQLite FTS5 or PostgreSQL's tsvector, one behaviour.

The index is kept off the poll's path. Indexing 25,000 news items costs SQLite about 4 s of CPU
(FTS5 tokenising 250 words an item), close to half of what a first pass of 1,000 sources costs
everything else; so saving an item only marks it (`items.search_pending`, true for a new row by
the column's default, set again when its text changes), and `index_pending` indexes marked items
in batches, from a job of the service. Text is folded in Python (the matcher's folding) before
either database sees it, and both are told to split words only (FTS5's unicode61 without
diacritic removal, PostgreSQL's `simple` configuration), so a query finds the same items on
both. Deleting an item removes its row (a trigger on SQLite, a cascading key on PostgreSQL).
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
MAX_INDEXED_CHARS = 100_000  # of an item's body text: an article longer than this is cut
COUNT_LIMIT = 100_000
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


def index_pending(conn: Connection, limit: int, document: Document) -> int:
    """Index up to `limit` marked items, oldest first; `document(title, summary, content,
    article)` gives the (title, body) to index, as folded words. Returns how many it indexed."""
    rows = conn.execute(
        select(items.c.id, items.c.title, items.c.summary, items.c.content, items.c.article)
        .where(items.c.search_pending)
        .order_by(items.c.id)
        .limit(limit)
    ).all()
    if not rows:
        return 0
    values = []
    for row in rows:
        title, body = document(row.title, row.summary, row.content, row.article)
        values.append({"item_id": row.id, "title": title, "body": body[:MAX_INDEXED_CHARS]})
    ids = [row.id for row in rows]
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                f"INSERT INTO {INDEX_TABLE} (item_id, document) VALUES (:item_id, "
                "setweight(to_tsvector('simple', :title), 'A') || "
                "setweight(to_tsvector('simple', :body), 'B')) "
                "ON CONFLICT (item_id) DO UPDATE SET document = excluded.document"
            ),
            values,
        )
    else:
        conn.execute(
            text(f"DELETE FROM {INDEX_TABLE} WHERE rowid = :item_id"),
            [{"item_id": i} for i in ids],
        )
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
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}"))
        try:
            yield
        except OperationalError as exc:
            if "statement timeout" in str(exc):
                raise _late(seconds) from exc
            raise
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    end = time.monotonic() + seconds

    def late() -> int:
        return 1 if time.monotonic() > end else 0

    raw.set_progress_handler(late, 1000)
    try:
        yield
    except OperationalError as exc:
        if "interrupted" in str(exc):
            raise _late(seconds) from exc
        raise
    finally:
        raw.set_progress_handler(None, 0)


def find(
    conn: Connection,
    fts5: str,
    tsquery: str,
    limit: int,
    offset: int,
    sections: Sequence[str] = (),
) -> list[int]:
    """Ids of matching items, best first (ties: newest first)."""
    where = ""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if sections:
        names = [f"s{n}" for n in range(len(sections))]
        params.update(zip(names, sections, strict=True))
        where = " AND items.section_id IN (" + ", ".join(f":{n}" for n in names) + ")"
    if conn.dialect.name == "postgresql":
        statement = (
            f"SELECT s.item_id FROM {INDEX_TABLE} s JOIN items ON items.id = s.item_id, "
            "to_tsquery('simple', :query) q WHERE s.document @@ q" + where + " "
            "ORDER BY ts_rank_cd(s.document, q) DESC, s.item_id DESC "
            "LIMIT :limit OFFSET :offset"
        )
        params["query"] = tsquery
    else:
        statement = (
            f"SELECT s.rowid FROM {INDEX_TABLE} s JOIN items ON items.id = s.rowid "
            f"WHERE {INDEX_TABLE} MATCH :query" + where + " "
            f"ORDER BY bm25({INDEX_TABLE}, {TITLE_WEIGHT}, 1.0), s.rowid DESC "
            "LIMIT :limit OFFSET :offset"
        )
        params["query"] = fts5
    return [row[0] for row in conn.execute(text(statement), params)]
