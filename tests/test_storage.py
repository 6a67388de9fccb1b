"""The storage contract, run against real SQLite and real PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, inspect, text

from aggregator.config import Config, Section, Source
from aggregator.exceptions import StorageError
from aggregator.process.pipeline import Processor
from aggregator.storage import Storage, migrate, tables
from aggregator.storage import items as items_module
from aggregator.storage import sources as sources_module
from aggregator.storage.engine import make_engine
from aggregator.storage.search import is_index_table
from aggregator.storage.tables import metadata
from aggregator.types import (
    DeliveryStatus,
    Enclosure,
    Entry,
    FetchRecord,
    Filing,
    RunStatus,
    SaveReport,
    SourceState,
    SubscriberStatus,
)
from tests.conftest import _reset_postgres
from tests.support import Clock

LEASE = timedelta(minutes=5)


def source(sid: str, **kw: object) -> Source:
    values: dict[str, object] = {
        "id": sid,
        "url": f"https://{sid}.example/feed",
        "section": "world",
        "interval": timedelta(minutes=15),
    }
    values.update(kw)
    return Source(**values)  # type: ignore[arg-type]


def entry(key: str, title: str = "A title", **kw: object) -> Entry:
    return Entry(key=key, title=title, link=f"https://news.example/{key}", **kw)  # type: ignore[arg-type]


# -- schema ---------------------------------------------------------------------------------


def _opens_without_alembic(database_url: str, why: str) -> None:
    """Open the database in a fresh process, which must not import Alembic."""
    script = (
        "import sys\n"
        "from aggregator.storage import Storage\n"
        f"Storage.open({database_url!r}).close()\n"
        f"assert 'alembic' not in sys.modules, 'alembic imported {why}'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_migrations_create_exactly_the_declared_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine, create_new=False)  # step by step, as an old database would go
    assert migrate.current(engine) == migrate.head()
    with engine.connect() as conn:
        # the search index is no SQLAlchemy table (FTS5 or a tsvector, made by its own DDL)
        context = MigrationContext.configure(
            conn,
            opts={
                "include_name": lambda name, kind, _: kind != "table" or not is_index_table(name)
            },
        )
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == []


def _schema(engine: Engine) -> dict[str, object]:
    """Everything the database says of each table: columns (type, nullable, default), keys,
    indexes, unique and check constraints, and its rows (the version Alembic reads among them)."""
    look = inspect(engine)
    found: dict[str, object] = {}
    for table in sorted(look.get_table_names()):
        found[table] = {
            # by name: the migrations add columns at the end, where a new table has them in
            # place (every statement names its columns)
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                for c in look.get_columns(table)
            ),
            "primary": look.get_pk_constraint(table)["constrained_columns"],
            "foreign": sorted(
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    str(f.get("options")),
                )
                for f in look.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (
                    i["name"],
                    tuple(i["column_names"]),
                    bool(i["unique"]),
                    # a partial index's WHERE by its text, not its object's address
                    str({k: str(v) for k, v in (i.get("dialect_options") or {}).items()}),
                )
                for i in look.get_indexes(table)
            ),
            "unique": sorted(
                (tuple(u["column_names"]),) for u in look.get_unique_constraints(table)
            ),
            "checks": sorted(str(c["sqltext"]) for c in look.get_check_constraints(table)),
        }
    with engine.connect() as conn:  # and every row: a new database holds only seeds
        for table in sorted(look.get_table_names()):
            found[f"{table} rows"] = sorted(
                map(tuple, conn.execute(text(f"SELECT * FROM {table}")))
            )
    return found


def test_a_new_database_is_made_as_the_migrations_make_it_without_alembic(
    database_url: str, tmp_path: Path
) -> None:
    """A new, empty database is made from the table definitions and stamped, without importing
    Alembic (12 MiB a process keeps): it must be the database the migrations make, down to its
    indexes, defaults and constraints, and Alembic must take it from there."""
    engine = make_engine(database_url)
    migrate.upgrade(engine, create_new=False)
    migrated = _schema(engine)
    engine.dispose()
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'new.db'}"
    else:
        _reset_postgres(database_url)
    _opens_without_alembic(database_url, "to make a new database")
    engine = make_engine(database_url)
    assert _schema(engine) == migrated
    migrate.downgrade(engine, "0005")  # Alembic knows where it stands
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    engine.dispose()


def test_upgrade_is_idempotent_and_downgrade_reversible(storage: Storage) -> None:
    storage.upgrade()
    assert storage.schema_revision() == migrate.head()
    migrate.downgrade(storage._engine, "base")
    assert storage.schema_revision() is None
    storage.upgrade()
    assert storage.schema_revision() == migrate.head()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: object) -> None:
    store = Storage.open(f"sqlite:///{tmp_path}/x/nested/agg.db")
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    store.close()


def test_unreachable_or_bad_database_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="cannot open the database"):
        Storage.open("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StorageError, match="unsupported database"):
        Storage.open("mysql://x@localhost/db")


def test_naive_datetimes_are_refused(storage: Storage, clock: Clock) -> None:
    clock.now = datetime(2026, 1, 1)  # naive: a bug in the caller, never stored silently
    with pytest.raises(Exception, match="naive datetime"):
        storage.sync_sources([source("a")])


# -- sources --------------------------------------------------------------------------------


def test_sync_adds_changes_and_keeps_removed_sources(storage: Storage, clock: Clock) -> None:
    report = storage.sync_sources([source("a"), source("b", title="B")])
    assert report.added == ("a", "b") and report.changed == () and report.removed == ()
    assert [s.id for s in storage.sources()] == ["a", "b"]
    state = storage.source("b")
    assert state is not None
    assert state.title == "B" and state.next_due_at == clock.now and state.in_config

    clock.advance(minutes=1)
    report = storage.sync_sources([source("a", url="https://moved.example/feed", enabled=False)])
    assert report.changed == ("a",) and report.removed == ("b",)
    a, b = storage.source("a"), storage.source("b")
    assert a is not None and b is not None
    assert a.url == a.fetch_url == "https://moved.example/feed" and not a.enabled
    assert not b.in_config  # kept, with its items, but no longer polled

    assert (
        storage.sync_sources([source("a", url="https://moved.example/feed", enabled=False)]).changed
        == ()
    )


def test_claims_are_leased_and_expire(storage: Storage, clock: Clock) -> None:
    storage.sync_sources([source("a"), source("b"), source("c", enabled=False)])
    first = storage.claim_due_sources("w1", LEASE, limit=10)
    assert [s.id for s in first] == ["a", "b"]
    assert all(s.lease_owner == "w1" for s in first)
    assert storage.claim_due_sources("w2", LEASE, limit=10) == []
    clock.advance(minutes=6)  # w1 died: its leases lapse
    assert [s.id for s in storage.claim_due_sources("w2", LEASE, limit=1)] == ["a"]


def test_a_new_url_voids_a_fetch_of_the_old_one_in_flight(storage: Storage, clock: Clock) -> None:
    """An editor changes a source's URL (a reload) while a worker fetches the old one: that
    result must not be stored over the fresh start, and the new URL is due at once."""
    storage.sync_sources([source("a")])
    [claimed] = storage.claim_due_sources("w1", LEASE, limit=1)
    storage.sync_sources([source("a", url="https://moved.example/feed")])
    late = FetchRecord(
        "a",
        clock(),
        clock() + timedelta(hours=1),
        status=200,
        etag='"old"',
        permanent_url="https://redirected.example/old",
    )
    assert storage.record_fetch(late, owner="w1") is None  # the lease went with the old URL
    state = storage.source("a")
    assert state is not None
    assert (state.url, state.fetch_url, state.etag) == (
        "https://moved.example/feed",
        "https://moved.example/feed",
        None,
    )
    assert [s.id for s in storage.claim_due_sources("w2", LEASE, limit=1)] == ["a"]
    assert claimed.fetch_url != state.fetch_url


def test_record_fetch_releases_lease_and_tracks_health(storage: Storage, clock: Clock) -> None:
    storage.sync_sources([source("a")])
    storage.claim_due_sources("w1", LEASE, limit=1)
    now = clock.now
    failed = FetchRecord(
        "a",
        now,
        now + timedelta(minutes=2),
        status=503,
        ok=False,
        error="HTTP 503 Service Unavailable",
    )
    assert storage.record_fetch(failed, owner="w1") is not None
    state = storage.source("a")
    assert state is not None
    assert state.consecutive_failures == 1 and state.last_error == "HTTP 503 Service Unavailable"
    assert state.lease_owner is None and state.next_due_at == now + timedelta(minutes=2)

    clock.advance(minutes=3)
    storage.claim_due_sources("w1", LEASE, limit=1)
    ok = FetchRecord(
        "a",
        clock.now,
        clock.now + timedelta(minutes=15),
        status=200,
        etag='"v1"',
        last_modified="Tue, 24 Nov 2026 12:00:00 GMT",
        permanent_url="https://new.example/feed",
    )
    assert storage.record_fetch(ok, [entry("k1")], owner="w1") is not None
    state = storage.source("a")
    assert state is not None
    assert state.consecutive_failures == 0 and state.last_error is None
    assert state.etag == '"v1"' and state.last_success_at == clock.now
    assert state.moved and state.fetch_url == "https://new.example/feed"

    clock.advance(minutes=16)
    storage.claim_due_sources("w1", LEASE, limit=1)
    not_modified = FetchRecord("a", clock.now, clock.now + timedelta(minutes=15), status=304)
    storage.record_fetch(not_modified, owner="w1")
    state = storage.source("a")
    assert state is not None and state.etag == '"v1"'  # a 304 keeps the validators


def test_a_lost_lease_stores_nothing(storage: Storage, clock: Clock) -> None:
    storage.sync_sources([source("a")])
    storage.claim_due_sources("w1", LEASE, limit=1)
    clock.advance(minutes=6)
    storage.claim_due_sources("w2", LEASE, limit=1)
    late = FetchRecord("a", clock.now, clock.now + timedelta(minutes=15), status=200)
    assert storage.record_fetch(late, [entry("k1")], owner="w1") is None
    assert storage.count_items() == 0
    state = storage.source("a")
    assert state is not None and state.lease_owner == "w2"


def test_gone_sources_are_not_claimed_again(storage: Storage, clock: Clock) -> None:
    storage.sync_sources([source("a")])
    storage.claim_due_sources("w1", LEASE, limit=1)
    gone = FetchRecord(
        "a", clock.now, clock.now, status=410, ok=False, error="HTTP 410 Gone", gone=True
    )
    storage.record_fetch(gone, owner="w1")
    clock.advance(days=1)
    assert storage.claim_due_sources("w1", LEASE, limit=1) == []


def test_concurrent_workers_never_claim_the_same_source(storage: Storage, clock: Clock) -> None:
    storage.sync_sources([source(f"s{i:02d}") for i in range(40)])
    claimed: dict[str, list[str]] = {"w1": [], "w2": [], "w3": []}

    def work(owner: str) -> None:
        for _ in range(100):  # bounded: 40 sources, at least one claimed per round
            batch = storage.claim_due_sources(owner, LEASE, limit=3)
            if not batch:
                return
            claimed[owner].extend(s.id for s in batch)

    threads = [threading.Thread(target=work, args=(owner,)) for owner in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [sid for ids in claimed.values() for sid in ids]
    assert sorted(every) == [f"s{i:02d}" for i in range(40)]  # each exactly once


# -- items ----------------------------------------------------------------------------------


def test_entries_are_stored_once_and_edits_update_in_place(storage: Storage, clock: Clock) -> None:
    storage.sync_sources([source("a")])
    published = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    first = storage.save_entries(
        "a",
        [
            entry(
                "k1",
                "Ceasefire talks resume",
                published=published,
                enclosures=(Enclosure("https://cdn.example/a.mp3", "audio/mpeg", 1234),),
            ),
            entry("k2", "محادثات وقف إطلاق النار"),
            entry("k1", "A repeated guid in one document"),
        ],
        filer=Processor(Config(sections=(Section("world", "World"),), sources=(source("a"),))),
    )
    assert len(first.new) == 2 and first.updated == () and first.unchanged == 0

    clock.advance(minutes=15)
    again = storage.save_entries(
        "a",
        [
            entry(
                "k1",
                "Ceasefire talks resume",
                published=published,
                enclosures=(Enclosure("https://cdn.example/a.mp3", "audio/mpeg", 1234),),
            ),
            entry("k2", "محادثات وقف إطلاق النار: تحديث"),
        ],
    )
    assert again.new == () and again.updated == (first.new[1],) and again.unchanged == 1
    assert storage.count_items("a") == 2

    k1 = storage.item(first.new[0])
    assert k1 is not None
    assert k1.entry.title == "Ceasefire talks resume" and k1.section_id == "world"
    assert k1.entry.published == published and k1.entry.published.tzinfo is not None
    assert k1.entry.enclosures == (Enclosure("https://cdn.example/a.mp3", "audio/mpeg", 1234),)
    assert k1.last_seen_at == clock.now and k1.changed_at == k1.first_seen_at
    k2 = storage.item(first.new[1])
    assert k2 is not None and k2.entry.title.endswith("تحديث") and k2.changed_at == clock.now

    newest = storage.recent_items(limit=1)
    assert [i.id for i in newest] == [first.new[1]]


class _Counting:
    """The config's own filer, saying what it was asked to file and in how many calls."""

    def __init__(self, processor: Processor) -> None:
        self._processor = processor
        self.calls: list[list[str]] = []
        self.index = None

    def file(self, source_id: str, entry: Entry) -> Filing:
        return self.file_all(source_id, [entry])[0]

    def file_all(self, source_id: str, entries: Sequence[Entry]) -> list[Filing]:
        self.calls.append([e.key for e in entries])
        return self._processor.file_all(source_id, entries)


def test_a_saves_new_entries_are_filed_together_and_its_edited_ones_too(
    storage: Storage, clock: Clock
) -> None:
    """A document's new entries go to the filer in one call (it makes their fingerprints
    together), its edited ones in another; unchanged ones are not filed again."""
    config = Config(sections=(Section("world", "World"),), sources=(source("a"),))
    storage.sync_sources([source("a")])
    filer = _Counting(Processor(config))
    storage.save_entries("a", [entry(f"k{n}", f"Story {n} of the day") for n in range(4)], filer)
    assert filer.calls == [["k0", "k1", "k2", "k3"]]
    clock.advance(minutes=5)
    filer.calls.clear()
    report = storage.save_entries(
        "a",
        [entry("k0", "Story 0 of the day"), entry("k1", "Story 1, edited"), entry("k9", "New"),
         entry("k2", "Story 2, edited")],
        filer,
    )  # fmt: skip
    assert filer.calls == [["k9"], ["k1", "k2"]]
    assert len(report.new) == 1 and len(report.updated) == 2 and report.unchanged == 1


def test_items_of_different_sources_with_the_same_key_are_distinct(storage: Storage) -> None:
    storage.sync_sources([source("a"), source("b")])
    storage.save_entries("a", [entry("same")])
    storage.save_entries("b", [entry("same")])
    assert storage.count_items() == 2


def test_a_large_batch_is_stored_in_chunks(storage: Storage) -> None:
    storage.sync_sources([source("a")])
    report = storage.save_entries("a", [entry(f"k{i}") for i in range(1200)])
    assert len(report.new) == 1200
    assert storage.save_entries("a", [entry(f"k{i}") for i in range(1200)]).unchanged == 1200


# -- digests --------------------------------------------------------------------------------


def test_one_worker_claims_a_digest_period(storage: Storage, clock: Clock) -> None:
    start, end = clock.now - timedelta(days=1), clock.now
    run = storage.claim_digest_run("morning", start, end, "w1", LEASE)
    assert run is not None and run.status is RunStatus.SENDING and run.claimed_by == "w1"
    assert storage.claim_digest_run("morning", start, end, "w2", LEASE) is None
    again = storage.claim_digest_run("morning", start, end, "w1", LEASE)
    assert again is not None and again.id == run.id  # the holder may renew

    clock.advance(minutes=6)  # w1 crashed mid-send: w2 resumes the same run
    resumed = storage.claim_digest_run("morning", start, end, "w2", LEASE)
    assert resumed is not None and resumed.id == run.id

    storage.finish_digest_run(run.id)
    clock.advance(minutes=10)
    assert storage.claim_digest_run("morning", start, end, "w3", LEASE) is None
    [latest] = storage.digest_runs("morning")
    assert latest.status is RunStatus.DONE and latest.finished_at == clock.now - timedelta(
        minutes=10
    )


def test_deliveries_are_recorded_per_recipient(storage: Storage, clock: Clock) -> None:
    run = storage.claim_digest_run("d", clock.now - timedelta(days=1), clock.now, "w1", LEASE)
    assert run is not None
    storage.record_delivery(run.id, "a@example.org", DeliveryStatus.SENT, message_id="<1@x>")
    storage.record_delivery(run.id, "b@example.org", DeliveryStatus.FAILED, error="451 try later")
    storage.record_delivery(run.id, "b@example.org", DeliveryStatus.SENT, message_id="<2@x>")
    storage.record_delivery(
        run.id, "c@example.org", DeliveryStatus.FAILED, error="550 no such user"
    )
    assert storage.delivered_recipients(run.id) == {"a@example.org", "b@example.org"}
    by_recipient = {d.recipient: d for d in storage.deliveries(run.id)}
    assert by_recipient["b@example.org"].attempts == 2
    assert by_recipient["b@example.org"].error is None
    assert by_recipient["c@example.org"].error == "550 no such user"


# -- subscribers ----------------------------------------------------------------------------


def test_subscriber_lifecycle(storage: Storage, clock: Clock) -> None:
    added = storage.add_subscriber("d", "Reader@Example.ORG")
    assert added.status is SubscriberStatus.PENDING and added.email == "reader@example.org"
    assert storage.unsubscribe("d", "other@example.org") is False
    assert storage.confirm_subscriber("d", "reader@EXAMPLE.org") is True  # one form per address
    assert storage.confirm_subscriber("d", "Reader@example.org") is False  # only once
    assert storage.add_subscriber("d", "Reader@example.org").status is SubscriberStatus.CONFIRMED
    assert storage.unsubscribe("d", "Reader@example.org") is True
    left = storage.subscriber("d", "Reader@example.org")
    assert left is not None and left.unsubscribed_at == clock.now
    assert storage.subscribers("d", SubscriberStatus.CONFIRMED) == []
    assert storage.add_subscriber("d", "Reader@example.org").status is SubscriberStatus.PENDING


def test_retention_prunes_old_items_and_never_brings_them_back(
    storage: Storage, clock: Clock
) -> None:
    storage.sync_sources([source("a")])
    storage.save_entries("a", [entry("old"), entry("fresh")])
    clock.advance(days=50)
    storage.save_entries("a", [entry("fresh")])  # "old" has left the feed
    clock.advance(days=45)
    assert storage.prune_items(timedelta(days=90)) == 1
    assert storage.count_items("a") == 1
    again = storage.save_entries("a", [entry("old"), entry("fresh")])
    assert again.new == () and again.unchanged == 1  # the pruned key stays pruned
    assert storage.prune_items(timedelta(days=90)) == 0


def test_an_item_stops_being_revised_after_the_cap(storage: Storage, clock: Clock) -> None:
    from aggregator.storage.items import MAX_REVISIONS

    storage.sync_sources([source("a")])
    for n in range(MAX_REVISIONS + 5):  # a feed whose entry changes on every fetch
        report = storage.save_entries("a", [entry("k", f"Title {n}")])
        clock.advance(minutes=1)
    assert report.updated == () and report.unchanged == 1
    [item] = storage.recent_items(1, "a")
    assert item.entry.title == f"Title {MAX_REVISIONS}"


def test_head_names_the_newest_migration_and_a_current_database_needs_no_alembic(
    database_url: str,
) -> None:
    assert migrate.head() == migrate.HEAD
    Storage.open(database_url).close()  # migrates
    _opens_without_alembic(database_url, "for a database at HEAD")


def _awkward_items() -> tuple[list[Entry], list[Filing]]:
    """New items whose every column a driver and SQLAlchemy could write differently."""
    when = datetime(2026, 3, 5, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=-5)))
    entries = [
        Entry(key="full", title="Ünïcode “quotes” \u2028", link="https://x.example/1",
              canonical_link="https://x.example/1", guid="g1", summary="<p>s</p>", content="c",
              authors=("Ann", "Bé"), categories=("World",),
              enclosures=(Enclosure("https://x.example/a.mp3", "audio/mpeg", 123),),
              language="fr", image="https://x.example/i.png", published=when, updated=when),
        Entry(key="bare", title="", published=datetime(999, 1, 2, tzinfo=UTC)),
    ]  # fmt: skip
    filings = [
        Filing("world", {"rule": "path", "pattern": "/w/"}, {"t": '{"hits": [1]}'}, b"\x00\x01"),
        Filing(),
    ]
    return entries, filings


def test_items_inserted_at_the_driver_are_stored_as_sqlalchemy_stores_them(
    storage: Storage, clock: Clock
) -> None:
    """New items go in at the driver (SQLAlchemy's per-value work was a sixth of a first poll);
    every column must hold exactly what SQLAlchemy's own insert writes, on both databases."""
    storage.sync_sources([source("a"), source("b")])
    entries, filings = _awkward_items()
    now = clock()
    with storage._engine.begin() as conn:
        for sid, insert in (
            ("a", lambda rows: conn.execute(tables.items.insert(), rows)),
            ("b", lambda rows: items_module.insert_rows(conn, rows)),
        ):
            insert([
                items_module.new_row(sid, e.key, items_module.columns_of(e), f, now)
                for e, f in zip(entries, filings, strict=True)
            ])  # fmt: skip
        stored = {
            sid: conn.exec_driver_sql(
                f"SELECT * FROM items WHERE source_id = '{sid}' ORDER BY key"
            ).all()
            for sid in ("a", "b")
        }
    a, b = stored["a"], stored["b"]
    assert len(a) == len(b) == 2
    for row_a, row_b in zip(a, b, strict=True):
        skip = {"id", "source_id"}
        left = {k: v for k, v in row_a._mapping.items() if k not in skip}
        right = {k: v for k, v in row_b._mapping.items() if k not in skip}
        assert left == right


def test_a_new_items_values_are_its_rows_values(storage: Storage, clock: Clock) -> None:
    """`new_values` (what a save inserts) writes what `new_row` and `insert_rows` write, which
    the test above holds to SQLAlchemy's own insert."""
    entries, filings = _awkward_items()
    entries.append(  # quotes and controls to escape, a time already in UTC, every optional field
        Entry(key="escapes", title="t", authors=('B"é\\',), categories=("\u2028\x01",),
              published=datetime(2026, 3, 5, tzinfo=UTC), duration=61, explicit=True)
    )  # fmt: skip
    filings.append(Filing())
    now = clock()
    with storage._engine.begin() as conn:
        write = tables.time_writer(conn.dialect)
        for entry, filing in zip(entries, filings, strict=True):
            row = items_module.new_row("a", entry.key, items_module.columns_of(entry), filing, now)
            assert (
                items_module.new_values("a", entry.key, entry, filing, write(now), write)
                == items_module._values([row], conn.dialect)[0]
            )


def test_outcomes_without_entries_are_written_together(storage: Storage, clock: Clock) -> None:
    """304s and failures waiting while another group is written go in one transaction; a lost
    lease among them is reported to its own caller only."""
    names = [f"s{n}" for n in range(6)]
    storage.sync_sources([source(name) for name in names])
    storage.claim_sources(names, "w1", timedelta(minutes=5))
    later = clock() + timedelta(hours=1)
    commits: list[int] = []
    event.listen(storage._engine, "commit", lambda _conn: commits.append(1))
    results: dict[str, object] = {}

    def record(name: str) -> None:
        owner = "w1" if name != "s5" else "w2"  # s5's lease is not w2's
        outcome = FetchRecord(name, clock(), later, status=304, ok=True)
        results[name] = storage.record_fetch(outcome, owner=owner)

    threads = [threading.Thread(target=record, args=(name,)) for name in names]
    with storage._group_turn:  # as if another group were being written
        for thread in threads:
            thread.start()
        for _ in range(500):
            if len(storage._waiting) == len(names):
                break
            threading.Event().wait(0.01)
        assert len(storage._waiting) == len(names)
    for thread in threads:
        thread.join()
    assert len(commits) == 1
    assert results.pop("s5") is None
    assert all(isinstance(result, SaveReport) for result in results.values())
    due = {state.id: state.next_due_at for state in storage.sources()}
    assert [name for name in names if due[name] == later] == names[:5]


def test_a_source_state_is_read_by_the_place_of_each_field() -> None:
    """`_state` makes a SourceState of a row by position: the columns read are its fields, in
    its order (a field added to one and not the other fails here, not as a shifted value)."""
    fields = [f.name for f in dataclasses.fields(SourceState)]
    columns = [c.name for c in sources_module._STATE_COLUMNS]
    assert columns == [name if name != "interval" else "interval_seconds" for name in fields]
    assert columns[sources_module._INTERVAL] == "interval_seconds"


def test_outcomes_written_together_are_written_as_one_at_a_time(
    storage: Storage, clock: Clock
) -> None:
    """`record_fetches` writes most 304s with a statement of their own (a third of the
    parameters): every kind of outcome leaves its source's row exactly as the statement for any
    outcome (`sources.record_fetch`) does, from the same row before."""
    later = clock() + timedelta(hours=1)
    outcomes = {
        "plain": FetchRecord("", clock(), later, status=304),
        "validators": FetchRecord("", clock(), later, status=304, etag='"v2"', last_modified="x"),
        "moved": FetchRecord("", clock(), later, status=304, permanent_url="https://m.example/"),
        "titled": FetchRecord("", clock(), later, status=304, feed_title="Renamed"),
        "document": FetchRecord("", clock(), later, status=200, etag='"v3"', entry_count=4),
        "failed": FetchRecord("", clock(), later, status=503, ok=False, error="HTTP 503"),
        "gone": FetchRecord("", clock(), later, status=410, ok=False, error="gone", gone=True),
    }
    names = [f"{kind}-{way}" for kind in outcomes for way in ("alone", "together")]
    storage.sync_sources([source(name) for name in names])
    # a row with something to keep or to reset: validators, a failure, a warning
    storage.claim_sources(names, "w1", LEASE)
    before = FetchRecord("", clock(), clock(), status=500, ok=False, error="HTTP 500")
    with storage._tx() as conn:
        sources_module.record_fetches(
            conn, [(replace(before, source_id=name), "w1") for name in names]
        )
        conn.execute(
            tables.sources.update().values(
                etag='"v1"', last_modified="y", last_warning="odd", last_entry_count=2
            )
        )
    clock.advance(minutes=1)
    storage.claim_sources(names, "w1", LEASE)
    with storage._tx() as conn:  # the statement for any outcome, one at a time
        for kind, outcome in outcomes.items():
            alone = replace(outcome, source_id=f"{kind}-alone")
            assert sources_module.record_fetch(conn, alone, "w1")
    together = [(replace(o, source_id=f"{kind}-together"), "w1") for kind, o in outcomes.items()]
    assert storage.record_fetches(together) == [True] * len(outcomes)

    def written(state: SourceState) -> SourceState:  # what a fetch's outcome decides
        moved = state.fetch_url if state.fetch_url != state.url else "(its own)"
        return replace(state, id="", url="", title="", fetch_url=moved)

    rows = {state.id: written(state) for state in storage.sources()}
    for kind in outcomes:
        assert rows[f"{kind}-together"] == rows[f"{kind}-alone"], kind
    assert rows["moved-together"].fetch_url == "https://m.example/"
    # and as the database holds them (a date written as other text would read back the same,
    # but sort apart from the others)
    with storage._tx() as conn:
        result = conn.exec_driver_sql("SELECT * FROM sources")
        held = {row.id: row._asdict() for row in result}
    for kind in outcomes:
        one, batch = held[f"{kind}-alone"], held[f"{kind}-together"]
        assert {k for k in batch if batch[k] != one[k]} <= {
            "id",
            "url",
            "fetch_url",
            "title",
        }, kind
    assert rows["plain-together"].etag == '"v1"' and rows["plain-together"].last_error is None
    assert rows["validators-together"].etag == '"v2"'


def test_a_database_failure_is_the_projects_storage_error(storage: Storage) -> None:
    """Callers outside storage know the project's errors only: a failure of the database (a
    table gone under it, here) is a StorageError naming it, with the library's error as its
    cause, and the storage still works for what is left."""
    storage.sync_sources([source("a")])
    saved = storage.save_entries("a", [entry("k1")])
    with storage._engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE item_topics")
    with pytest.raises(StorageError, match="the database failed") as raised:
        storage.item_details(saved.new[0])
    assert raised.value.__cause__ is not None
    assert "\n" not in str(raised.value)  # one line, not the statement and its parameters
    assert [s.id for s in storage.sources()] == ["a"]


@pytest.mark.postgres
def test_a_postgresql_database_made_by_any_engine_gets_its_partial_index(
    postgres_url: str,
) -> None:
    """PostgreSQL's WHERE of the search index's partial index is added to the table definitions
    only when PostgreSQL is used (naming it loaded that dialect in every SQLite process). A
    database made through an engine that `make_engine` did not make, in a fresh process, still
    gets it."""
    _reset_postgres(postgres_url)
    script = (
        "import sys\n"
        "from sqlalchemy import create_engine, text\n"
        "from aggregator.storage import migrate\n"
        "engine = create_engine(sys.argv[1].replace('postgresql://', 'postgresql+psycopg://'))\n"
        "migrate.upgrade(engine)\n"
        "with engine.connect() as conn:\n"
        '    print(conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = '
        "'ix_items_search_pending'\")).scalar_one())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, postgres_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip().endswith("WHERE search_pending"), done.stdout
    _reset_postgres(postgres_url)


def test_batches_saved_together_store_what_saving_them_in_turn_stores(
    storage: Storage, clock: Clock
) -> None:
    """`save_many` (a group of polls, in one go: one read of what is stored, the new rows of
    all in shared statements) stores what `save` one batch after the other stores: the same
    rows, ids in the same order, the same reports; over new, unchanged, edited, pruned and
    repeated keys, and a key two sources share."""
    names = ["a1", "a2", "a3", "b1", "b2", "b3"]
    storage.sync_sources([source(name) for name in names])
    first = [entry("kept"), entry("edited"), entry("pruned"), entry("shared")]
    with storage._engine.begin() as conn:
        for name in names:
            items_module.save(conn, name, first, clock())
        for name in ("a2", "b2"):
            conn.execute(
                tables.pruned_keys.insert().values(source_id=name, key="gone", pruned_at=clock())
            )
    clock.advance(minutes=30)

    def second(n: int) -> list[Entry]:
        return [
            entry("kept"),
            entry("edited", f"A new title {n}"),
            entry("new", published=datetime(2026, 11, 24, 9, n, tzinfo=UTC)),
            entry("older", published=datetime(2026, 11, 24, 8, tzinfo=UTC)),
            entry("gone"),
            entry("new", "A repeat: the first wins"),
            entry("shared"),
            entry(f"own{n}"),
        ]

    now = clock()
    with storage._engine.begin() as conn:
        together = items_module.save_many(
            conn, [(f"a{n}", second(n), now, None) for n in (1, 2, 3)]
        )
        in_turn = [items_module.save(conn, f"b{n}", second(n), now) for n in (1, 2, 3)]
        rows = {
            name: conn.exec_driver_sql(
                f"SELECT * FROM items WHERE source_id = '{name}' ORDER BY id"
            ).all()
            for name in names
        }
    for n, (report_a, fresh_a), (report_b, fresh_b) in zip(
        (1, 2, 3), together, in_turn, strict=True
    ):
        assert len(report_a.new) == len(report_b.new) == (3 if n == 2 else 4)  # a2's "gone"
        assert len(report_a.updated) == len(report_b.updated) == 1
        assert report_a.unchanged == report_b.unchanged == 2
        assert [i.entry.key for i in fresh_a] == [i.entry.key for i in fresh_b]
    new_ids = [sorted(report.new) for report, _ in together]
    assert all(one[-1] < then[0] for one, then in itertools.pairwise(new_ids))
    for n in (1, 2, 3):
        a, b = rows[f"a{n}"], rows[f"b{n}"]
        assert [row.key for row in a] == [row.key for row in b]
        skip = {"id", "source_id"}
        for row_a, row_b in zip(a, b, strict=True):
            left = {k: v for k, v in row_a._mapping.items() if k not in skip}
            right = {k: v for k, v in row_b._mapping.items() if k not in skip}
            assert left == right
    assert {row.key for row in rows["a2"]} == {
        *("kept", "edited", "pruned", "shared", "new", "older", "own2")
    }
    assert next(row.title for row in rows["a1"] if row.key == "new") == "A title"


def test_inserts_and_lookups_of_any_size_take_a_few_statement_shapes(
    storage: Storage, clock: Clock
) -> None:
    """The driver keeps each distinct statement it ran prepared (SQLite, 128 of them), and an
    insert of many rows prepared is large: batches of every size from 1 to 120 rows go in
    statements of four shapes, and their lookups of what is stored in a few more."""
    storage.sync_sources([source("a")])
    seen: set[str] = set()

    def note(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith(("INSERT INTO items ", "WITH wanted")):
            seen.add(statement)

    event.listen(storage._engine, "before_cursor_execute", note)
    done = 0
    with storage._engine.begin() as conn:
        for size in range(1, 121):
            batch = [entry(f"k{done + n}") for n in range(size)]
            report, _ = items_module.save(conn, "a", batch, clock())
            assert len(report.new) == size
            done += size
    inserts = {s for s in seen if s.startswith("INSERT")}
    assert len(inserts) == 4
    assert len(seen - inserts) <= 2 * 8  # two lookups, padded to 1, 2, 4, ... 128 pairs
    assert storage.count_items() == done
