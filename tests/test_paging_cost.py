"""An archive page (`?before=`) costs what the first page does, at any depth, and clients cannot
make the server pile up work with cursors.

The plans are read from the databases themselves (EXPLAIN QUERY PLAN on SQLite, EXPLAIN on
PostgreSQL) for a cursor deep in the archive: every read of items seeks to the cursor on an index
ending in (first_seen_at, id), with no full scan and no sort of the table. Paging through shared
timestamps, multi-source stories and a filter read one seek per source still yields every entry
exactly once, as one long page does. Archive pages are cached apart from first pages, and only a
few are made at once; the rest wait in a bounded line or get 503.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select, create_engine, event, text

import aggregator.publish.publisher as publisher_module
from aggregator.config import Config, Filter, Output
from aggregator.process.pipeline import Processor
from aggregator.publish.publisher import Document, Publisher
from aggregator.publish.view import encode_cursor
from aggregator.storage import Storage
from aggregator.storage.items import page_query
from aggregator.types import Entry, Filing, Selection
from aggregator.web import ARCHIVE_RENDERS, ARCHIVE_WAITING, create_app
from tests.publishing import entry, newsroom, serving
from tests.support import Clock

BATCH = 500  # items first seen together: they share one first_seen_at
BATCHES = 12


class Filer:
    """Files items as a poll would (a section, a topic for some), without the story index, so
    the archive is made quickly; every item is its own story."""

    index = None

    def file(self, source_id: str, entry: Entry) -> Filing:
        number = int(entry.key.rpartition("-")[2])
        topics = {"climate": '{"keywords": ["climate"]}'} if number % 7 == 0 else {}
        return Filing(section_id="opinion" if source_id == "blog" else "world", topics=topics)

    def file_all(self, source_id: str, entries: Sequence[Entry]) -> list[Filing]:
        return [self.file(source_id, entry) for entry in entries]


def archive(storage: Storage, clock: Clock) -> tuple[datetime, int]:
    """BATCHES x BATCH items from three sources; returns a cursor one batch from the oldest."""
    storage.sync_sources(newsroom().sources)
    sources = ("wire", "herald", "blog")
    deep: tuple[datetime, int] | None = None
    for batch in range(BATCHES):
        source = sources[batch % 3]
        entries = [
            Entry(
                key=f"{source}-{batch * BATCH + n}",
                title=f"Story {batch * BATCH + n}",
                link=f"https://news.example/{batch * BATCH + n}",
                summary="<p>Text</p>",
            )
            for n in range(BATCH)
        ]
        report = storage.save_entries(source, entries, Filer())
        if batch == 1:
            deep = (clock.now, min(report.new))
        clock.advance(minutes=10)
    assert deep is not None
    return deep


def plan(url: str, statement: Select[Any]) -> list[str]:
    """The database's own plan for `statement`, one line per step."""
    engine = create_engine(url)
    sent: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def keep(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, _many: bool) -> None:
        sent.append((sql, params))

    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("ANALYZE"))  # as autovacuum would have by now
            conn.execute(statement).all()
            sql, params = sent[-1]
            sqlite = conn.dialect.name == "sqlite"
            rows = conn.exec_driver_sql(
                ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + sql, params
            ).all()
            return [str(row[-1] if sqlite else row[0]) for row in rows]
    finally:
        engine.dispose()


SELECTIONS = {
    "everything": Selection(),
    "a section": Selection(sections=("world",)),
    "a source and a topic": Selection(sources=("wire",), topics=("climate",)),
    "a topic": Selection(topics=("climate",)),
    "two sections": Selection(sections=("world", "opinion")),
    "two sources": Selection(sources=("wire", "blog")),
}


def test_a_deep_page_seeks_to_its_cursor_on_an_index(
    storage: Storage, clock: Clock, database_url: str
) -> None:
    deep = archive(storage, clock)
    for name, selection in SELECTIONS.items():
        lines = plan(database_url, page_query(selection, 200, deep))
        shown = f"{name}:\n" + "\n".join(lines)
        assert re.search(r"ix_items_\w*first_seen_at_id\b", shown), shown
        if database_url.startswith("sqlite"):
            check_sqlite(lines, shown, split=len(selection.sections or selection.sources) > 1)
        else:
            check_postgresql(lines, shown)


def check_sqlite(lines: list[str], shown: str, split: bool) -> None:
    reads = [line for line in lines if " items " in f"{line} " and "stories" not in line]
    assert reads, shown
    for line in reads:  # each read of items is a seek on a paging index, never a scan
        assert line.startswith("SEARCH items USING") and "first_seen_at<" in line, shown
    if not split:  # read in index order: nothing sorted (a split sorts only its parts' pages)
        assert "TEMP B-TREE" not in shown, shown


SEEK = "ROW(first_seen_at, id) <"  # PostgreSQL's words for the keyset bound


def check_postgresql(lines: list[str], shown: str) -> None:
    assert "Seq Scan on items" not in shown, shown
    reads = [line for line in lines if " on items" in line]  # scans of the table itself
    seeks = [
        line for line in lines if "Index Cond: " in line and "ROW(first_seen_at, id) <" in line
    ]
    assert reads and len(seeks) >= len(reads), shown  # each one driven by a seek to the cursor


# -- every story once ----------------------------------------------------------------------------


def storied(config: Config, limit: int) -> Config:
    """The newsroom with two more outputs: one read one seek per source, one per section."""
    extra = (
        Output("herald-blog", "Herald and blog", filter=Filter(sources=("herald", "blog"))),
        Output("sections", "Both sections", filter=Filter(sections=("world", "opinion"))),
    )
    outputs = tuple(replace(o, limit=limit) for o in (*config.outputs, *extra))
    return replace(config, outputs=outputs)


def walk(publisher: Publisher, output: str) -> list[str]:
    """Entry ids of every page of an output, in order."""
    ids: list[str] = []
    before: str | None = None
    for _ in range(200):
        document = json.loads(publisher.feed("feeds", output, "json", before).body)
        ids += [item["id"] for item in document["items"]]
        if "next_url" not in document:
            return ids
        before = document["next_url"].split("before=", 1)[1]
    raise AssertionError("paging did not end")


def test_paging_gives_every_entry_exactly_once(storage: Storage, clock: Clock) -> None:
    config = storied(newsroom(), 7)
    processor = Processor(config)
    storage.sync_sources(config.sources)
    for batch in range(12):  # batches share a first-seen time; stories span sources
        for source in ("herald", "wire", "blog"):
            entries = [
                entry(
                    f"{source}-{batch}-{n}",
                    f"{source} {batch} {n}",
                    f"<p>Report {batch} {n} from {source} {'z' * n}</p>",
                    link=f"https://news.example/{batch}/{n}" if n % 3 == 0 else None,
                )
                for n in range(9)
            ]
            storage.save_entries(source, entries, processor)
        clock.advance(minutes=7)
    paged = Publisher(storage, config, clock=clock, refresh=0)
    whole = Publisher(storage, storied(config, 1000), clock=clock, refresh=0, paged=False)
    for output in ("all", "copies", "herald-blog", "sections"):
        ids = walk(paged, output)
        assert len(ids) == len(set(ids)), output
        expected = [i["id"] for i in json.loads(whole.feed("feeds", output, "json").body)["items"]]
        assert ids == expected, output
        assert len(ids) > 7 * 5, output  # many pages deep


def test_archive_pages_point_back_after_new_items_arrive(storage: Storage, clock: Clock) -> None:
    """Page boundaries are remembered per revision: new items make them read again."""
    config = newsroom(limit=2)
    processor = Processor(config)
    storage.sync_sources(config.sources)

    def add(tag: str, count: int) -> None:
        for n in range(count):
            clock.advance(minutes=1)
            storage.save_entries(
                "herald",
                [entry(f"{tag}{n}", f"{tag} {n}", f"<p>{tag} {n} {'q' * n}</p>")],
                processor,
            )

    add("old", 9)
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    cursors = [json.loads(publisher.feed("feeds", "all", "json").body)["next_url"].split("=", 1)[1]]
    for _ in range(2):
        document = json.loads(publisher.feed("feeds", "all", "json", cursors[-1]).body)
        cursors.append(document["next_url"].split("=", 1)[1])
    view = publisher.view(publisher.publication("feeds", "all"), cursors[2])
    assert view.previous == cursors[1]
    add("new", 3)  # every page boundary moves down
    fresh = Publisher(storage, config, clock=clock, refresh=0)
    for cursor in cursors:
        expected = fresh.view(fresh.publication("feeds", "all"), cursor).previous
        assert publisher.view(publisher.publication("feeds", "all"), cursor).previous == expected
    assert expected != cursors[1]


# -- bounded work --------------------------------------------------------------------------------


def test_archive_pages_are_cached_apart_and_never_evict_first_pages(
    storage: Storage, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "CACHE_SIZE", 8)
    monkeypatch.setattr(publisher_module, "PAGE_CACHE_SIZE", 4)
    deep = archive(storage, clock)
    publisher = Publisher(storage, newsroom(limit=5), clock=clock)
    publisher.check()
    first = publisher.feed("feeds", "all", "atom")
    cursors = [encode_cursor((deep[0], deep[1] + n)) for n in range(20)]
    for cursor in cursors:  # a client asking for one cursor after another
        publisher.feed("feeds", "all", "atom", cursor)
    assert publisher.cached("feeds/all", "atom", "") is first
    assert publisher.cached("feeds/all", "atom", cursors[-1]) is not None
    assert publisher.cached("feeds/all", "atom", cursors[0]) is None  # the archive LRU let it go


class Held(Publisher):
    """Archive pages wait for `release` while being made, counting how many are made at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.making = 0
        self.most = 0
        self.lock = threading.Lock()

    def feed(self, kind: str, name: str, fmt: str, before: str | None = None) -> Document:
        if before is None:
            return super().feed(kind, name, fmt, before)
        with self.lock:
            self.making += 1
            self.most = max(self.most, self.making)
        try:
            self.release.wait(30)
            return super().feed(kind, name, fmt, before)
        finally:
            with self.lock:
                self.making -= 1


@pytest.fixture
def held(tmp_path: Path, clock: Clock) -> Iterator[tuple[Held, int]]:
    """A real server on a publisher that holds archive pages (the web app is what is tested:
    SQLite is enough)."""
    storage = Storage.open(f"sqlite:///{tmp_path / 'held.db'}", clock=clock)
    archive(storage, clock)
    publisher = Held(storage, newsroom(limit=5), clock=clock, refresh=0.1)
    try:
        with serving(create_app(publisher, refresh=0.1)) as port:
            try:
                yield publisher, port
            finally:
                publisher.release.set()
    finally:
        storage.close()


def get(port: int, path: str) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def test_only_a_few_archive_pages_are_made_at_once_and_the_line_is_bounded(
    held: tuple[Held, int], clock: Clock
) -> None:
    publisher, port = held
    asked = ARCHIVE_RENDERS + ARCHIVE_WAITING + 6
    answers: list[tuple[int, dict[str, str]]] = []

    def ask(n: int) -> None:
        answers.append(get(port, f"/feeds/all.atom?before={int(clock.now.timestamp())}000000.{n}"))

    askers = [threading.Thread(target=ask, args=(n,)) for n in range(asked)]
    for asker in askers:
        asker.start()
    deadline = time.monotonic() + 20
    while len(answers) < 6:  # the requests past the line are answered at once
        assert time.monotonic() < deadline, answers
        time.sleep(0.02)
    assert get(port, "/feeds/all.atom")[0] == 200  # first pages are served meanwhile
    assert get(port, "/healthz")[0] == 200
    while publisher.making < ARCHIVE_RENDERS:
        assert time.monotonic() < deadline, publisher.making
        time.sleep(0.02)
    publisher.release.set()
    for asker in askers:
        asker.join(timeout=30)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * (ARCHIVE_RENDERS + ARCHIVE_WAITING) + [503] * 6
    assert all(h.get("retry-after") == "2" for status, h in answers if status == 503)
    assert publisher.most == ARCHIVE_RENDERS
