"""Helper processes parse and file for the poller: the same items, topics, reasons and
fingerprints as the poller alone; new rules after a reload; the poller carries on if one dies.
Real feed server, real SQLite (and PostgreSQL for the comparison), real processes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from aggregator.config import Config, load_text
from aggregator.feed.parse import ParsedFeed
from aggregator.prepare import (
    PIPE_BYTES,
    PROCESS_FROM,
    Filed,
    Prepared,
    helpers_for,
    usable_cores,
)
from aggregator.process.pipeline import Kept
from aggregator.storage import Storage
from aggregator.types import Entry, Filing
from tests.feedserver import FeedServer, feed_file
from tests.support import Build, Clock, Harness, rss


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def _config(server: FeedServer, count: int, processes: int, keyword: str = "Gaza") -> Config:
    sources = "".join(
        f"  - {{id: s{n}, url: '{server.url(f'/s{n}.xml')}', section: world}}\n"
        for n in range(count)
    )
    return load_text(
        "sections: [{id: world, title: World}]\n"
        f"topics: [{{id: t, title: T, keywords: ['{keyword}', 'Palestin*']}},"
        " {id: c, title: C, keywords: [climate, storm]}]\n"
        f"sources:\n{sources}"
        f"polling: {{timeout: 5s, host_gap: 0s, processes: {processes}}}\n",
        "test.yaml",
        env={},
    )


def _serve(server: FeedServer, count: int) -> None:
    extra = "Gaza talks; a storm in Palestine; climate and Gaza again, GAZA"
    for n in range(count):
        server.routes[f"/s{n}.xml"] = feed_file(rss(f"s{n}", 6, start=n % 3, extra=extra))


# not story_id: which story an item joins depends on which source the threads finish first
_COLUMNS = "key, title, summary, content, section_id, section_reason, fingerprint, content_hash"


def _stored(storage: Storage) -> list[tuple[Any, ...]]:
    with storage._engine.connect() as conn:
        items = conn.execute(text(f"SELECT {_COLUMNS} FROM items ORDER BY key")).all()
        topics = conn.execute(
            text(
                "SELECT i.key, t.topic_id, t.reason FROM item_topics t "
                "JOIN items i ON i.id = t.item_id"
            )
        ).all()
    assert items and topics
    return [tuple(row) for row in items] + sorted(tuple(map(str, row)) for row in topics)


def test_helpers_store_what_the_poller_alone_stores(
    server: FeedServer, clock: Clock, tmp_path: Path
) -> None:
    """Two SQLite databases, so the rows compare as they are (the other tests here run on
    PostgreSQL too)."""
    _serve(server, 8)
    alone = Storage.open(f"sqlite:///{tmp_path / 'alone.db'}", clock=clock)
    storage = Storage.open(f"sqlite:///{tmp_path / 'helped.db'}", clock=clock)
    try:
        with Harness(alone, _config(server, 8, processes=1)) as harness:
            results = harness.poll()
            assert harness.poller._helpers._pool is None
        with Harness(storage, _config(server, 8, processes=2)) as harness:
            helped = harness.poll()
            assert harness.poller._helpers._pool is not None  # the helper did the work
        assert sum(r.new for r in results.values()) == sum(r.new for r in helped.values()) == 48
        assert _stored(storage) == _stored(alone)
    finally:
        alone.close()
        storage.close()


def test_helpers_file_with_the_new_rules_after_a_reload(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    _serve(server, 2)
    harness = harness_for(_config(server, 2, processes=2))
    harness.poll("s0")
    harness.poller.configure(_config(server, 2, processes=2, keyword="talks"))
    harness.poll("s1")
    hits = {item.source_id: item.topics for item in storage.recent_items(limit=100)}
    assert hits["s0"] == ("c", "t") and hits["s1"] == ("c", "t")
    with storage._engine.connect() as conn:
        reasons: dict[str, Any] = dict(
            conn.execute(
                text(
                    "SELECT i.source_id, t.reason FROM item_topics t "
                    "JOIN items i ON i.id = t.item_id WHERE t.topic_id = 't'"
                )
            ).all()
        )
    terms = {
        source: {hit["term"] for hit in (r if isinstance(r, dict) else json.loads(r))["hits"]}
        for source, r in reasons.items()
    }
    assert terms == {"s0": {"Gaza", "Palestin*"}, "s1": {"talks", "Palestin*"}}


def test_the_poller_carries_on_when_a_helper_dies(
    server: FeedServer, storage: Storage, harness_for: Build, caplog: pytest.LogCaptureFixture
) -> None:
    _serve(server, 3)
    harness = harness_for(_config(server, 3, processes=2))
    assert harness.poll("s0")["s0"].new == 6
    pool = harness.poller._helpers._pool
    assert pool is not None
    for process in pool.processes:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    with caplog.at_level(logging.WARNING, logger="aggregator.prepare"):
        results = harness.poll("s1", "s2")
    assert all(r.ok and r.new == 6 for r in results.values())
    assert "a parsing helper process died" in caplog.text


def test_how_many_helpers_a_poll_gets(server: FeedServer) -> None:
    auto = _config(server, 1, processes=0)
    assert helpers_for(auto, PROCESS_FROM - 1) == 0
    assert helpers_for(auto, PROCESS_FROM) == (1 if usable_cores() >= 2 else 0)
    assert helpers_for(_config(server, 1, processes=1), 10_000) == 0
    assert helpers_for(_config(server, 1, processes=3), 1) == 2


def test_a_body_that_is_no_feed_fails_its_source_alone_in_a_helper(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    _serve(server, 2)
    server.routes["/s1.xml"] = feed_file(b"<html><body>moved</body></html>", "text/html")
    harness = harness_for(_config(server, 2, processes=2))
    results = harness.poll("s0", "s1")
    assert harness.poller._helpers._pool is not None
    assert results["s0"].ok and results["s0"].new == 6
    assert not results["s1"].ok and results["s1"].kind == "parse_error"
    assert "not a readable feed" in (results["s1"].error or "")


def test_a_document_the_database_refuses_fails_its_source_alone(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    """Documents read in helpers are stored together from the poller's loop; when the database
    refuses one source's items (a trigger here, standing for any fault), that source fails with
    the reason and the others are stored, its lease released for the next poll."""
    _serve(server, 4)
    if storage.backend == "sqlite":
        refuse = [
            "CREATE TRIGGER refuse BEFORE INSERT ON items WHEN NEW.source_id = 's2' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ]
    else:
        refuse = [
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.source_id = 's2' "
            "THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ "
            "LANGUAGE plpgsql",
            "CREATE TRIGGER refuse BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION refuse()",
        ]
    with storage._engine.begin() as conn:
        for statement in refuse:
            conn.execute(text(statement))
    harness = harness_for(_config(server, 4, processes=2))
    results = harness.poll()
    assert harness.poller._helpers.prepared == 4
    assert [sid for sid, r in sorted(results.items()) if r.ok] == ["s0", "s1", "s3"]
    assert all(results[sid].new == 6 for sid in ("s0", "s1", "s3"))
    assert "refused by the test" in (results["s2"].error or "")
    state = storage.source("s2")
    assert state is not None and state.lease_owner is None and state.consecutive_failures == 1
    assert storage.count_items() == 18


def test_a_helper_that_cannot_take_a_document_fails_its_source_not_the_poll(
    server: FeedServer, storage: Storage, harness_for: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handing a document to a helper can fail (a reload shutting the pool down under it says
    "cannot schedule new futures after shutdown"): that source goes the full way, which says
    what happened (here it fails again: an internal error), and the poll goes on; no lease is
    left held."""
    _serve(server, 4)
    harness = harness_for(_config(server, 4, processes=2))
    helpers = harness.poller._helpers
    real = helpers.submit

    def submit(*args: Any) -> Any:
        if args[-1] == "s2":  # the source's id
            raise RuntimeError("cannot schedule new futures after shutdown")
        return real(*args)

    monkeypatch.setattr(helpers, "submit", submit)
    results = harness.poll()
    assert sorted(results) == ["s0", "s1", "s2", "s3"]
    assert all(results[sid].ok and results[sid].new == 6 for sid in ("s0", "s1", "s3"))
    assert results["s2"].kind == "internal_error"
    assert "cannot schedule new futures" in (results["s2"].error or "")
    assert all(state.lease_owner is None for state in storage.sources())


def test_documents_waiting_to_be_stored_hold_no_body(
    server: FeedServer, storage: Storage, harness_for: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents may wait for the storing thread (up to 16); what waits is the entries, not the
    fetched bodies (a feed of 256 KiB here, the storing slowed down so that many wait)."""
    import gc

    from aggregator.feed.fetch import FetchResult

    count = 40
    padding = b"<!-- " + b"x" * (256 * 1024) + b" -->"
    for n in range(count):
        body = rss(f"s{n}", 5).replace(b"<channel>", b"<channel>" + padding, 1)
        server.routes[f"/s{n}.xml"] = feed_file(body)
    harness = harness_for(_config(server, count, processes=2))
    save_fetches = storage.save_fetches
    alive: list[int] = []
    waited: list[int] = []

    def slowly(fetches: Any) -> Any:
        threading.Event().wait(0.2)
        gc.collect()
        alive.append(sum(1 for o in gc.get_objects() if isinstance(o, FetchResult) and o.body))
        waited.append(len(fetches))
        return save_fetches(fetches)

    monkeypatch.setattr(storage, "save_fetches", slowly)
    results = harness.poll()
    assert len(results) == count and all(r.ok and r.new == 5 for r in results.values())
    assert max(waited) >= 4  # several waited at once
    assert max(alive) <= 8  # the fetches in hand (concurrency), none of those waiting


def test_a_source_named_twice_is_polled_once(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    _serve(server, 2)
    harness = harness_for(_config(server, 2, processes=2))
    results = harness.poller.run_once(only=["s0", "s0", "s1"])
    assert sorted(r.source_id for r in results) == ["s0", "s1"]
    assert all(r.ok and r.new == 6 for r in results)


def test_where_helpers_run_they_read_every_document(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    """The poller leaves every document to its helpers, however many wait on them: parsing in
    the poller brought the parser and its objects into the largest process (5 MiB at 1,000
    sources) for no measurable gain once fetching moved onto the event loop."""
    _serve(server, 4)
    harness = harness_for(_config(server, 4, processes=2))
    results = harness.poll()
    assert all(r.new == 6 for r in results.values()) and len(results) == 4
    assert harness.poller._helpers.prepared == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe sizes are Linux's")
def test_the_helpers_pipes_hold_several_documents(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    """A prepared document is larger than a pipe's default 64 KiB: the pipes to and from the
    helpers are widened (where the user's allowance lets them), and documents of 300 KiB and
    more go through whole."""
    extra = " ".join(f"Gaza word{n}" for n in range(2_000))  # about 20 KB an item, as written
    for n in range(3):
        server.routes[f"/s{n}.xml"] = feed_file(rss(f"s{n}", 12, extra=extra))
    harness = harness_for(_config(server, 3, processes=2))
    results = harness.poll()
    assert all(r.new == 12 for r in results.values()) and len(results) == 3
    pool = harness.poller._helpers._pool
    assert pool is not None and harness.poller._helpers.prepared == 3
    import fcntl

    sizes = [fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) for fd in pool.pipes()]
    assert len(sizes) == 2
    allowed = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    assert all(size >= min(PIPE_BYTES, allowed) for size in sizes), sizes


def test_a_poll_of_304s_starts_no_helper(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    """Helpers start when a document needs one: a poll where every source answers 304 costs
    no process (nor multiprocessing's resource tracker)."""
    for n in range(3):
        server.routes[f"/s{n}.xml"] = feed_file(rss(f"s{n}", 2), etag=f'"v{n}"')
    first = harness_for(_config(server, 3, processes=2))
    assert all(r.new == 2 for r in first.poll().values())
    assert first.poller._helpers._pool is not None
    again = harness_for(_config(server, 3, processes=2))  # a new process's poller, say
    assert all(r.status == 304 for r in again.poll("s0", "s1", "s2").values())
    assert again.poller._helpers._pool is None


class _Counting:
    """A filer that says which entries it filed, and in how many calls."""

    index = None

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def file(self, source_id: str, entry: Entry) -> Filing:
        return self.file_all(source_id, [entry])[0]

    def file_all(self, source_id: str, entries: Sequence[Entry]) -> list[Filing]:
        self.calls.append([e.key for e in entries])
        return [Filing(section_id=f"poller-{e.key}") for e in entries]


def test_what_a_helper_filed_comes_back_and_the_rest_is_filed_together() -> None:
    """Entries a helper filed get its filings; the others (an entry it did not see, even with
    a key it saw) are filed by the poller's filer, in one call, in their order."""
    entries = [Entry(key=f"k{n}", title=f"Title {n}") for n in range(5)]
    seen = entries[:3]
    prepared = Prepared(
        ParsedFeed("rss", "Feed", None, None, None, tuple(seen)),
        Kept(tuple(seen)),
        None,
        {e.key: Filing(section_id=f"helper-{e.key}") for e in seen},
    )
    inner = _Counting()
    other = Entry(key="k1", title="an entry the helper did not see")
    asked = [entries[0], entries[3], other, entries[2], entries[4]]
    filed = Filed(inner, prepared).file_all("s", asked)
    assert [f.section_id for f in filed] == [
        "helper-k0", "poller-k3", "poller-k1", "helper-k2", "poller-k4"
    ]  # fmt: skip
    assert inner.calls == [["k3", "k1", "k4"]]


def test_an_entrys_digest_is_made_once_and_travels_with_it() -> None:
    """The digest storage compares is the one stored items were hashed with, and an entry
    pickled to the poller (as a helper sends it) carries the digest made in the helper."""
    entry = Entry(
        key="k", title="Ünï", link="https://x.example/1", summary="<p>s</p>",
        authors=("Ann",), categories=("World",), language="fr",
        published=datetime(2026, 3, 5, 7, 8, 9, tzinfo=UTC),
    )  # fmt: skip
    parts = ["Ünï", "https://x.example/1", None, "<p>s</p>", "", ["Ann"], ["World"], [], "fr",
             None, "2026-03-05T07:08:09+00:00"]  # fmt: skip
    expected = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()
    assert entry.digest == expected
    travelled = pickle.loads(pickle.dumps(entry))
    assert travelled.__dict__["digest"] == expected  # carried, not made again
    assert travelled == entry
    assert replace(entry, title="Edited").digest != expected
