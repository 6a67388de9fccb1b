"""Storage: the one interface to the database; rows never leave this package.

Each method is one transaction. The implementation is split per entity (sources, items, digests,
subscribers); this class only opens transactions and hands the frozen domain types back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from aggregator.config import Source
from aggregator.exceptions import StorageError
from aggregator.storage import (
    choices,
    digests,
    items,
    migrate,
    outputs,
    search,
    sources,
    stories,
    subscribers,
)
from aggregator.storage.engine import WRITE_OPTION, make_engine, may_hold_data, normalise_url
from aggregator.storage.items import SourceCounts
from aggregator.types import (
    ArticleFetch,
    Choice,
    Delivery,
    DeliveryStatus,
    DigestRun,
    Entry,
    FetchRecord,
    Filer,
    Filing,
    Item,
    ItemDetails,
    Refiling,
    SaveReport,
    Selected,
    Selection,
    SourceState,
    StoryIndex,
    Subscriber,
    SubscriberStatus,
    SyncReport,
)

log = logging.getLogger(__name__)

__all__ = ["SourceCounts", "Storage", "may_hold_data", "normalise_url"]


class _Waiting:
    """A poll's outcome waiting to be written with others, and what became of it."""

    __slots__ = ("done", "failed", "held", "owner", "record")

    def __init__(self, record: FetchRecord, owner: str | None) -> None:
        self.record = record
        self.owner = owner
        self.done = False
        self.held = False
        self.failed: Exception | None = None


class _Save:
    """A poll's entries waiting to be stored with others', and what became of them."""

    __slots__ = ("entries", "failed", "filer", "owner", "record", "report", "settled")

    def __init__(
        self, record: FetchRecord, entries: list[Entry], owner: str | None, filer: Filer | None
    ) -> None:
        self.record = record
        self.entries = entries
        self.owner = owner
        self.filer = filer
        self.settled = False  # committed (its report set; None: the lease was lost), or failed
        self.report: SaveReport | None = None
        self.failed: Exception | None = None

    def fail(self, exc: Exception) -> None:
        self.failed, self.settled = exc, True


def _failure(source_id: str, exc: Exception) -> StorageError:
    """The error each poll's own call raises for one failure of its group (an exception object
    is raised in one thread only: raising sets its traceback)."""
    failure = StorageError(f"storing the fetch of {source_id}: {exc}")
    failure.__cause__ = exc
    return failure


Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


PLAN_APART = 100  # entries from which a save files and compares before its write transaction


def _first_line(exc: BaseException) -> str:
    """A database error's message without the statement and parameters SQLAlchemy appends."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


class Storage:
    """The aggregator's database, SQLite or PostgreSQL, behind one set of methods."""

    def __init__(self, engine: Engine, clock: Clock = utcnow) -> None:
        self._engine = engine
        self.clock = clock
        self._write_lock = threading.Lock()
        self._waiting: list[_Waiting] = []  # outcomes without entries, for the next group write
        self._waiting_lock = threading.Lock()
        self._group_turn = threading.Lock()
        self._saves: list[_Save] = []  # polls' entries, for the next group save
        self._saves_ready = threading.Condition()  # guards the two: a group written, or a turn
        self._save_writing = False  # a group is being written

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True, clock: Clock = utcnow) -> Storage:
        """Connect, and (by default) bring the schema up to date first."""
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            engine.dispose()
            raise StorageError(f"cannot open the database {engine.url!r}: {exc.orig}") from None
        if upgrade:
            migrate.upgrade(engine)
        return cls(engine, clock)

    @property
    def backend(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._engine.dialect.name

    @property
    def url(self) -> str:
        """The database URL with any password hidden, for logs and messages."""
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Connection]:
        """One transaction; read-only ones (`write=False`) never wait for SQLite's write lock.

        On SQLite, this process's writers queue on a Python lock first: SQLite has one writer
        at a time anyway, and its own busy handler waits by sleeping (up to 100 ms a try), which
        under several polling threads cost more time than the writes themselves.
        """
        lock = self._write_lock if write and self.backend == "sqlite" else nullcontext()
        try:
            with lock, self._engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: write})
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:  # callers know the project's errors, not the library's
            raise StorageError(f"the database failed: {_first_line(exc)}") from exc

    @contextmanager
    def _saving(self) -> Iterator[tuple[Connection, list[Callable[[], None]]]]:
        """A write transaction and a list of what to do once it commits, done before this
        process's next writer may start (on SQLite, writers queue on one lock): a save's new
        items are then in the story index when the next save checks it for what it misses.
        Done after the lock, in a busy poll many saves read the previous one's items back."""
        committed: list[Callable[[], None]] = []
        with self._tx() as conn:
            yield conn, committed
            conn.commit()
            for then in committed:
                then()

    # -- schema -------------------------------------------------------------------------------

    def schema_revision(self) -> str | None:
        return migrate.current(self._engine)

    def upgrade(self) -> None:
        migrate.upgrade(self._engine)

    # -- sources ------------------------------------------------------------------------------

    def sync_sources(self, configured: Sequence[Source]) -> SyncReport:
        with self._tx() as conn:
            return sources.sync(conn, configured, self.clock())

    def source(self, source_id: str) -> SourceState | None:
        with self._tx(write=False) as conn:
            return sources.get(conn, source_id)

    def sources(self) -> list[SourceState]:
        with self._tx(write=False) as conn:
            return sources.all_states(conn)

    def pollable_sources(self) -> list[tuple[str, datetime]]:
        """Each source that polls, with when it falls due."""
        with self._tx(write=False) as conn:
            return sources.pollable(conn)

    def claim_due_sources(self, owner: str, lease: timedelta, limit: int) -> list[SourceState]:
        with self._tx() as conn:
            return sources.claim_due(conn, self.clock(), owner, lease, limit)

    def claim_sources(self, ids: Sequence[str], owner: str, lease: timedelta) -> list[SourceState]:
        with self._tx() as conn:
            return sources.claim_named(conn, ids, self.clock(), owner, lease)

    def next_due(self) -> datetime | None:
        with self._tx(write=False) as conn:
            return sources.next_due(conn)

    def queue_lag(self) -> float:
        """Seconds the most overdue unclaimed source has waited past its due time (0: none)."""
        now = self.clock()
        with self._tx(write=False) as conn:
            oldest = sources.oldest_waiting(conn, now)
        return max(0.0, (now - oldest).total_seconds()) if oldest else 0.0

    def release_source(self, source_id: str, owner: str) -> None:
        with self._tx() as conn:
            sources.release(conn, source_id, owner)

    def record_fetch(
        self,
        record: FetchRecord,
        entries: Iterable[Entry] = (),
        owner: str | None = None,
        filer: Filer | None = None,
    ) -> SaveReport | None:
        """Store a poll's entries and outcome, all or nothing (in one transaction, shared with
        other polls waiting to be stored: `_save_together`); None if the lease was lost.

        New and edited entries are filed by `filer` (section, topics, fingerprint) and new ones
        linked to stories, in the same transaction; the filing and comparing are done before it.
        """
        entries = list(entries)
        if not entries:
            return self._record_together(record, owner)
        plan = self._plan(record.source_id, entries, record.fetched_at, filer)
        if plan is None:
            return self._save_together(record, entries, owner, filer)
        with self._saving() as (conn, committed):
            if not sources.record_fetch(conn, record, owner):
                conn.rollback()
                return None
            report, fresh = self._save(
                conn, record.source_id, entries, record.fetched_at, filer, plan
            )
            committed.append(lambda: self._committed(fresh, filer))
        return report

    def _save_together(
        self, record: FetchRecord, entries: list[Entry], owner: str | None, filer: Filer | None
    ) -> SaveReport | None:
        """A poll's entries go in one transaction with every other poll's waiting to be stored
        (as outcomes without entries do, `_record_together`): in a busy first pass several polls
        wait for the write turn at any moment, and each paid its own transaction and its own
        story index lookups and additions (a batch of a few dozen items, where numpy's per-call
        cost is most of the work). Whoever finds no group being written writes every poll
        waiting; the others are woken when theirs is written, or to write the next group.
        Should a group fail, each of its polls is written alone, so one poll's fault never
        costs the others theirs."""
        me = _Save(record, entries, owner, filer)
        self._in_turn([me])
        if me.failed is not None:
            raise me.failed
        return me.report

    def save_fetches(
        self, fetches: Sequence[tuple[FetchRecord, list[Entry], str | None, Filer | None]]
    ) -> list[SaveReport | Exception | None]:
        """`record_fetch` for several polls' documents at once, from one thread (the poller's
        loop hands them over as they come): for each, its report (None: the lease was lost), or
        the exception its own call would have raised."""
        saves: list[_Save] = []
        done: list[_Save | SaveReport | Exception | None] = []
        for record, entries, owner, filer in fetches:
            if not entries or (filer is not None and len(entries) >= PLAN_APART):
                done.append(self._alone(record, entries, owner, filer))  # their own way
            else:
                saves.append(_Save(record, entries, owner, filer))
                done.append(saves[-1])
        self._in_turn(saves)
        return [
            d if not isinstance(d, _Save) else d.failed if d.failed is not None else d.report
            for d in done
        ]

    def _alone(
        self, record: FetchRecord, entries: list[Entry], owner: str | None, filer: Filer | None
    ) -> SaveReport | Exception | None:
        try:
            return self.record_fetch(record, entries, owner, filer)
        except Exception as exc:
            return exc

    def _in_turn(self, mine: list[_Save]) -> None:
        """Saves go in one transaction with every other poll's waiting to be stored: whoever
        finds no group being written writes every save waiting, the others are woken when
        theirs are written, or to write the next group."""
        if not mine:
            return
        with self._saves_ready:
            self._saves.extend(mine)
            while self._save_writing and not all(save.settled for save in mine):
                self._saves_ready.wait()
            batch: list[_Save] = []
            if not all(save.settled for save in mine):
                self._save_writing = True
                batch, self._saves = self._saves, []
        if batch:
            try:
                self._save_group(batch)
            finally:
                with self._saves_ready:
                    for save in batch:
                        if not save.settled:  # interrupted (a BaseException): not written
                            save.fail(
                                StorageError(
                                    f"storing the fetch of {save.record.source_id} was interrupted"
                                )
                            )
                    self._save_writing = False
                    self._saves_ready.notify_all()

    def _save_group(self, batch: list[_Save]) -> None:
        try:
            self._write_group(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].fail(exc)
            elif any(save.settled for save in batch):  # stored: only remembering them failed
                for save in batch:
                    save.fail(_failure(save.record.source_id, exc))
            else:
                log.warning(
                    "storing %d polls together failed (%s); storing each alone",
                    len(batch),
                    exc,
                )
                for save in batch:
                    try:
                        self._write_group([save])
                    except Exception as own:
                        save.fail(own)

    def _write_group(self, batch: Sequence[_Save]) -> None:
        """Saves in one transaction, their new items linked to stories together (a poll's items
        are compared with the group's other polls' as with stored ones).

        Locks are taken as a poll saved alone takes them, so that workers sharing PostgreSQL
        never wait on each other in a cycle: the sources' rows first, in id order (as claims
        and other groups lock them), then, before any item row is written, the story lock (a
        poll saved alone takes it before its first insert, and touches its stored items after;
        in a group, one poll's stored items would otherwise be held while waiting for it)."""
        ordered = sorted(batch, key=lambda save: save.record.source_id)
        with self._saving() as (conn, committed):
            # a lost lease writes nothing, and its save's report stays None
            kept = sources.record_fetches(conn, [(save.record, save.owner) for save in ordered])
            held = [save for save, holds in zip(ordered, kept, strict=True) if holds]
            locked = False

            def lock() -> None:
                nonlocal locked
                if not locked:  # the story lock, taken once
                    stories.lock(conn)
                    locked = True

            if len(held) > 1:
                lock()
            batches = [
                (save.record.source_id, save.entries, save.record.fetched_at, save.filer)
                for save in held
            ]
            stored = [
                (save, report, fresh)
                for save, (report, fresh) in zip(
                    held, items.save_many(conn, batches, lock), strict=True
                )
            ]
            now = max(save.record.fetched_at for save in ordered)
            merged: set[int] = set()
            by_index: dict[int, tuple[StoryIndex | None, list[items.NewItem]]] = {}
            for save, _, fresh in stored:
                index = save.filer.index if save.filer is not None and fresh else None
                by_index.setdefault(id(index), (index, []))[1].extend(fresh)
            for index, fresh in by_index.values():
                merged |= stories.link(conn, fresh, index, now)
            if any(report.new or report.updated for _, report, _ in stored):
                outputs.bump(conn)
            reports = {
                id(save): replace(report, merged=sum(1 for item in fresh if item.id in merged))
                for save, report, fresh in stored
            }

            def added() -> None:
                for save in ordered:
                    save.report = reports.get(id(save))
                    save.settled = True
                for index, fresh in by_index.values():
                    if index is not None and fresh:
                        stories.remember(index, fresh)

            committed.append(added)

    def record_fetches(self, outcomes: Sequence[tuple[FetchRecord, str | None]]) -> list[bool]:
        """Outcomes with no entries (304s, failures), each with the lease owner it needs, in one
        transaction; for each, whether its lease was still held (a lost one writes nothing)."""
        with self._tx() as conn:
            return sources.record_fetches(conn, outcomes)

    def _record_together(self, record: FetchRecord, owner: str | None) -> SaveReport | None:
        """An outcome with no entries (a 304, a failure) goes in one transaction with every
        other one waiting: whoever gets the turn writes them all, and the others find theirs
        written. An all-304 poll of 1,000 sources made 1,000 write transactions, each a commit
        and, on SQLite, a wait for the write lock; the pass now takes about a tenth less time.
        A lost lease writes nothing, so it spoils no one else's."""
        me = _Waiting(record, owner)
        with self._waiting_lock:
            self._waiting.append(me)
        with self._group_turn:
            if not me.done:
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                try:
                    held = self.record_fetches([(w.record, w.owner) for w in batch])
                except Exception as exc:  # each waiter's own call raises it
                    for waiting in batch:
                        waiting.failed, waiting.done = exc, True
                else:
                    for waiting, kept in zip(batch, held, strict=True):
                        waiting.held, waiting.done = kept, True
        if me.failed is not None:
            raise StorageError(f"storing the fetch of {record.source_id}: {me.failed}") from (
                me.failed
            )
        return SaveReport() if me.held else None

    def _plan(
        self, source_id: str, entries: Sequence[Entry], now: datetime, filer: Filer | None
    ) -> stories.Plan | None:
        """File and compare a big batch in a read transaction, so the write one holds its lock
        for writes; a feed's usual few dozen entries are filed inside it, which costs the lock a
        few milliseconds and saves a transaction (and, measured, 20% of a first pass's CPU)."""
        if filer is None or len(entries) < PLAN_APART:
            return None
        with self._tx(write=False) as conn:
            return stories.prepare(conn, source_id, entries, now, filer)

    @staticmethod
    def _save(
        conn: Connection,
        source_id: str,
        entries: Sequence[Entry],
        now: datetime,
        filer: Filer | None,
        plan: stories.Plan | None = None,
    ) -> tuple[SaveReport, list[items.NewItem]]:
        report, fresh = items.save(
            conn,
            source_id,
            entries,
            now,
            stories.prefiled(filer, plan),
            before_insert=lambda: stories.lock(conn),
        )
        merged = stories.link(conn, fresh, filer.index if filer and fresh else None, now, plan)
        if report.new or report.updated:
            outputs.bump(conn)
        return replace(report, merged=len(merged)), fresh

    @staticmethod
    def _committed(fresh: list[items.NewItem], filer: Filer | None) -> None:
        """Only what was committed enters the story index: a rolled-back save must leave no
        fingerprint behind (SQLite hands its ids out again)."""
        if fresh and filer is not None and filer.index is not None:
            stories.remember(filer.index, fresh)

    # -- items --------------------------------------------------------------------------------

    def save_entries(
        self, source_id: str, entries: Iterable[Entry], filer: Filer | None = None
    ) -> SaveReport:
        entries = list(entries)
        now = self.clock()
        plan = self._plan(source_id, entries, now, filer)
        with self._saving() as (conn, committed):
            report, fresh = self._save(conn, source_id, entries, now, filer, plan)
            committed.append(lambda: self._committed(fresh, filer))
        return report

    def warm_index(self, index: StoryIndex) -> int:
        """Load the fingerprints of the items in the window into a fresh index (at start)."""
        with self._tx(write=False) as conn:
            return stories.catch_up(conn, index, self.clock())

    def item(self, item_id: int) -> Item | None:
        with self._tx(write=False) as conn:
            return items.get(conn, item_id)

    def recent_items(self, limit: int = 50, source_id: str | None = None) -> list[Item]:
        with self._tx(write=False) as conn:
            return items.recent(conn, limit, source_id)

    def item_details(self, item_id: int) -> ItemDetails | None:
        """The item with why it was filed where it is, and its story's other items."""
        with self._tx(write=False) as conn:
            return items.details(conn, item_id)

    def find_items(self, url: str) -> list[int]:
        """Ids of items with this link (compared in canonical form too), newest first."""
        with self._tx(write=False) as conn:
            return items.find(conn, url)

    def detach_item(self, item_id: int) -> int | None:
        """Give an item a story of its own and keep it there; None if there is no such item."""
        with self._tx() as conn:
            stories.lock(conn)
            outputs.bump(conn)
            return stories.detach(conn, item_id, self.clock())

    def items_after(self, after_id: int, limit: int = 500) -> list[Refiling]:
        """A batch of stored items in id order with their filing reasons."""
        with self._tx(write=False) as conn:
            return items.batch_after(conn, after_id, limit)

    def pending_articles(self, source_id: str, limit: int) -> list[Item]:
        """Items of a full_text source whose article page is still to fetch, newest first."""
        with self._tx(write=False) as conn:
            return items.pending_articles(conn, source_id, limit)

    def record_articles(
        self,
        source_id: str,
        fetched: Sequence[ArticleFetch],
        filings: Sequence[tuple[int, Filing]],
        problem: str | None,
    ) -> None:
        """Article pages read for a source's items (their text, and their filing on it), and
        what went wrong with the others, in one transaction."""
        with self._tx() as conn:
            items.record_articles(conn, fetched)
            items.refile(conn, filings)
            sources.note_articles(conn, source_id, problem)
            outputs.bump(conn)

    def refile(self, filings: Sequence[tuple[int, Filing]]) -> None:
        """Rewrite the sections and topics of these items."""
        with self._tx() as conn:
            items.refile(conn, filings)
            outputs.bump(conn)

    def settle_story_leads(self) -> None:
        """Choose every story's lead again, after source priorities changed."""
        with self._tx() as conn:
            stories.lock(conn)
            stories.settle_all(conn, self.clock())
            outputs.bump(conn)

    def select_items(
        self,
        selection: Selection,
        limit: int,
        accept: Callable[[Item], bool] | None = None,
        before: tuple[datetime, int] | None = None,
        shown: Callable[[Item], bool] | None = None,
    ) -> list[Selected]:
        """The newest items of a selection, for a feed or a digest: by default one per story
        (its lead when the lead is selected too, else the story's first selected item), each
        with the story's other items; `accept` is a further test (an output's terms, say).

        An entry's place is its story's newest selected item (`Selected.position`); `before`
        continues after the last entry of a previous page, leaving out stories that had a place
        there. Whether a newer item was shown is judged by `shown` (default: `accept`) and the
        selection without its time bound, so an item that aged out since cannot bring its story
        back. Reads pages of candidates until `limit` entries are found or the items run out.
        """

        def wanted(item: Item) -> bool:
            return selection.matches(item) and (accept is None or accept(item))

        timeless = replace(selection, seen_since=None)
        was_shown = shown or accept

        def shown_before(item: Item, cursor: tuple[datetime, int]) -> bool:
            return (
                (item.first_seen_at, item.id) >= cursor
                and timeless.matches(item)
                and (was_shown is None or was_shown(item))
            )

        chosen: dict[int, Item] = {}  # story (or item) -> the entry shown for it
        leads: dict[int, int | None] = {}
        openers: dict[int, tuple[str, str] | None] = {}
        places: dict[int, tuple[datetime, int]] = {}
        order: list[int] = []
        earlier: set[int] = set()  # stories that had their place on an earlier page
        members: dict[int, list[Item]] = {}
        cursor = before
        page = max(4 * limit, 100)
        with self._tx(write=False) as conn:
            while True:
                batch = items.select_page(conn, selection, page, cursor)
                fresh: list[int] = []
                for found in batch:
                    item = found.item
                    if accept is not None and not accept(item):
                        continue
                    key = (
                        item.id if selection.every_item or item.story_id is None else -item.story_id
                    )
                    if key in earlier:
                        continue
                    if key not in chosen:
                        chosen[key], leads[key], openers[key] = item, found.lead, found.opener
                        places[key] = (item.first_seen_at, item.id)
                        order.append(key)
                        fresh.append(key)
                    elif item.id == found.lead:  # the lead takes its story's place
                        chosen[key] = item
                if before is not None and fresh:
                    stories_found = items.story_members(conn, [-key for key in fresh if key < 0])
                    members.update(stories_found)
                    for key in fresh:
                        if key < 0 and any(shown_before(m, before) for m in stories_found[-key]):
                            earlier.add(key)
                    order = [key for key in order if key not in earlier]
                if len(order) >= limit or len(batch) < page:
                    break
                last = batch[-1].item
                cursor = (last.first_seen_at, last.id)
            order = order[:limit]
            missing = [-key for key in order if key < 0 and -key not in members]
            if missing:
                members.update(items.story_members(conn, missing))
        for key in order:  # a lead older than every page read still takes its story's place
            lead = leads.get(key)
            if key < 0 and lead is not None and chosen[key].id != lead:
                found_lead = next((m for m in members.get(-key, []) if m.id == lead), None)
                if found_lead is not None and wanted(found_lead):
                    chosen[key] = found_lead
        result = []
        for key in order:
            item = chosen[key]
            others = members.get(item.story_id or 0, []) if key < 0 else []
            result.append(
                Selected(
                    item,
                    tuple(o for o in others if o.id != item.id),
                    places[key],
                    openers[key] if key < 0 else None,
                )
            )
        return result

    # -- search -------------------------------------------------------------------------------

    def index_for_search(self, document: search.Document, limit: int = 200) -> int:
        """Index up to `limit` items stored or changed since the search index last read them."""
        with self._tx() as conn:
            return search.index_pending(conn, limit, document)

    def search_pending(self) -> int:
        """How many stored items searches cannot find yet."""
        with self._tx(write=False) as conn:
            return search.pending(conn)

    def search(
        self,
        fts5: str,
        tsquery: str,
        limit: int,
        offset: int = 0,
        sections: Sequence[str] = (),
        seconds: float = 5.0,
        topics: Sequence[str] = (),
    ) -> list[Selected]:
        """Items matching a query (given in each database's syntax), in `sections` and on
        `topics` where given, best first, each with its story's other items;
        SearchRefusedError past `seconds`."""
        with self._tx(write=False) as conn:
            with search.deadline(conn, seconds):
                ids = search.find(conn, fts5, tsquery, limit, offset, sections, topics)
            found = items.by_ids(conn, ids)
            members = items.story_members(
                conn, sorted({i.story_id for i in found if i.story_id is not None})
            )
        return [
            Selected(i, tuple(m for m in members.get(i.story_id or 0, []) if m.id != i.id))
            for i in found
        ]

    def revision(self) -> int:
        """A counter that moves whenever stored items change in a way a published feed shows."""
        with self._tx(write=False) as conn:
            return outputs.revision(conn)

    def announce_output(self, output_id: str, content_hash: str, count: int) -> bool:
        """Record an output's new first page; True for the one caller that should ping the hub."""
        with self._tx() as conn:
            return outputs.announce(conn, output_id, content_hash, count, self.clock())

    def publication_times(self, source_id: str, limit: int = 20) -> list[datetime]:
        with self._tx(write=False) as conn:
            return items.publication_times(conn, source_id, limit)

    def item_counts(self) -> dict[str, SourceCounts]:
        """Per source: stored items, and new ones in the last day and week."""
        with self._tx(write=False) as conn:
            return items.counts_by_source(conn, self.clock())

    def prune_items(self, retention: timedelta) -> int:
        """Drop items not seen in their feed for `retention`; their keys are never stored again."""
        with self._tx() as conn:
            now = self.clock()
            stories.lock(conn)
            pruned = items.prune(conn, now - retention, now)
            if pruned:
                stories.tidy(conn, now)
                outputs.bump(conn)
            return pruned

    def count_items(self, source_id: str | None = None) -> int:
        with self._tx(write=False) as conn:
            return items.count(conn, source_id)

    # -- digests ------------------------------------------------------------------------------

    def claim_digest_run(
        self,
        digest_id: str,
        start: datetime,
        end: datetime,
        owner: str,
        lease: timedelta,
        dead: str | None = None,
    ) -> DigestRun | None:
        with self._tx() as conn:
            return digests.claim_run(conn, digest_id, start, end, owner, lease, self.clock(), dead)

    def finish_digest_run(self, run_id: int) -> None:
        with self._tx() as conn:
            digests.finish_run(conn, run_id, self.clock())

    def digest_runs(self, digest_id: str, limit: int = 20) -> list[DigestRun]:
        with self._tx(write=False) as conn:
            return digests.runs(conn, digest_id, limit)

    def record_delivery(
        self,
        run_id: int,
        recipient: str,
        status: DeliveryStatus,
        error: str | None = None,
        message_id: str | None = None,
    ) -> None:
        with self._tx() as conn:
            digests.record_delivery(
                conn, run_id, recipient, status, self.clock(), error, message_id
            )

    @contextmanager
    def delivery_log(self, run_id: int) -> Iterator[Callable[..., None]]:
        """`record(recipient, status, error=None, message_id=None)` for one sender: each call is
        its own committed transaction, on one connection kept for the run (a fresh connection a
        delivery cost more than the rest of sending a message). One per thread."""
        lock = self._write_lock if self.backend == "sqlite" else nullcontext()
        with self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})

            def record(
                recipient: str,
                status: DeliveryStatus,
                error: str | None = None,
                message_id: str | None = None,
            ) -> None:
                with lock, conn.begin():
                    digests.record_delivery(
                        conn, run_id, recipient, status, self.clock(), error, message_id
                    )

            yield record

    def deliveries(self, run_id: int) -> list[Delivery]:
        with self._tx(write=False) as conn:
            return digests.run_deliveries(conn, run_id)

    def delivered_recipients(self, run_id: int) -> set[str]:
        with self._tx(write=False) as conn:
            return digests.delivered(conn, run_id)

    # -- subscribers --------------------------------------------------------------------------

    def add_subscriber(self, digest_id: str, email: str) -> Subscriber:
        with self._tx() as conn:
            return subscribers.add(conn, digest_id, email, self.clock())

    def claim_confirmation(
        self, digest_id: str, email: str, now: datetime, every: timedelta
    ) -> bool:
        with self._tx() as conn:
            return subscribers.claim_confirmation(conn, digest_id, email, now, every)

    def forget_confirmation(self, digest_id: str, email: str) -> None:
        with self._tx() as conn:
            subscribers.forget_confirmation(conn, digest_id, email)

    def confirm_subscriber(self, digest_id: str, email: str) -> bool:
        with self._tx() as conn:
            return subscribers.confirm(conn, digest_id, email, self.clock())

    def unsubscribe(self, digest_id: str, email: str) -> bool:
        with self._tx() as conn:
            return subscribers.unsubscribe(conn, digest_id, email, self.clock())

    def suppress(self, digest_id: str, email: str) -> bool:
        """Unsubscribe an address for good, YAML recipients included; False if it was already."""
        with self._tx() as conn:
            return subscribers.suppress(conn, digest_id, email, self.clock())

    def covered_until(self, run_keys: Sequence[str]) -> dict[str, datetime]:
        """Where each recipient's last served period of these runs ended (lower-cased)."""
        with self._tx(write=False) as conn:
            return digests.covered_until(conn, list(run_keys))

    def choice(self, digest_id: str, email: str) -> Choice | None:
        """What this recipient chose of a digest (None: nothing yet, the whole digest)."""
        with self._tx(write=False) as conn:
            return choices.get(conn, digest_id, email)

    def choices(self, digest_id: str) -> dict[str, Choice]:
        """Every recipient's choice of a digest, by lower-cased address."""
        with self._tx(write=False) as conn:
            return choices.of_digest(conn, digest_id)

    def choose(self, digest_id: str, email: str, choice: Choice) -> None:
        with self._tx() as conn:
            choices.put(conn, digest_id, email, choice, self.clock())

    def subscriber(self, digest_id: str, email: str) -> Subscriber | None:
        with self._tx(write=False) as conn:
            return subscribers.get(conn, digest_id, email)

    def subscribers(
        self, digest_id: str, status: SubscriberStatus | None = None
    ) -> list[Subscriber]:
        with self._tx(write=False) as conn:
            return subscribers.listing(conn, digest_id, status)
