"""From a fetched body to entries ready to store: parsed, capped, filtered and filed; in helper
processes when a poll is big enough for the second core to pay.

Parsing, normalising and filing are pure CPU under the GIL, about half of a first poll's time;
storing, HTTP and the story index stay in the poller. A helper process gets the body and gives
back the entries with their filings, so storage files nothing itself for them (`Filed`). A helper
that dies takes its pool with it: the poller says so and parses in its own threads from then on.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor, Future
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aggregator import malloc
from aggregator.config import Config
from aggregator.feed.parse import ParsedFeed, parse_document, parse_page
from aggregator.process.pipeline import Kept, Processor
from aggregator.types import Entry, Filer, Filing, StoryIndex, file_missing

if TYPE_CHECKING:
    from aggregator.helperpool import HelperPool

log = logging.getLogger(__name__)

PROCESS_FROM = 50  # sources in one poll from which `processes: 0` (auto) starts its helpers
# What the pipes between the poller and its helpers hold (Linux's most for a user, by default).
# A prepared document of 25 items pickles to about 72 KiB, more than a pipe's default 64 KiB:
# a helper sending one waited, its next document not begun, until the poller's busy GIL let it
# read the whole of it. Alternating first passes of 1,000 sources: -6% CPU, -6 to -13% wall time.
PIPE_BYTES = 1 << 20


def newest(entries: Sequence[Entry], limit: int) -> tuple[tuple[Entry, ...], str | None]:
    """At most `limit` entries of a document, the newest, in the document's order, and the
    warning for the source when some were left out. A feed of 45,000 entries took a quarter of
    an hour to store, so `polling.max_entries` bounds it. Dated entries go newest first; undated
    ones count as older, in the order the feed lists them (feeds list their newest first)."""
    if len(entries) <= limit:
        return tuple(entries), None

    def age(position: int) -> tuple[bool, float, int]:
        published = entries[position].published
        return (published is None, -published.timestamp() if published else 0.0, position)

    taken = sorted(sorted(range(len(entries)), key=age)[:limit])
    warning = f"the feed has {len(entries):,} entries; the newest {limit:,} were taken"
    return tuple(entries[n] for n in taken), warning


@dataclass(frozen=True)
class Prepared:
    """A document made ready: what it says of itself, the entries taken (capped, then through
    the source's filters), and, when made in a helper, the filing of each kept entry by key."""

    parsed: ParsedFeed
    kept: Kept
    capped: str | None
    filings: dict[str, Filing] | None = None


def prepare(
    processor: Processor,
    body: bytes,
    url: str,
    now: datetime,
    content_type: str | None,
    source_id: str,
    *,
    file: bool = False,
) -> Prepared:
    """Raises ParseError for a body that is no feed."""
    rules = processor.pages.get(source_id)
    if rules is not None:
        parsed = parse_page(body, url, now, rules, content_type)
    else:
        parsed = parse_document(body, url, now, content_type)
    entries, capped = newest(parsed.entries, processor.config.polling.max_entries)
    kept = processor.keep(source_id, entries)
    filings = None
    if file:
        made = processor.file_all(source_id, kept.entries)
        filings = {e.key: filing for e, filing in zip(kept.entries, made, strict=True)}
        for entry in kept.entries:
            entry.digest  # noqa: B018 (made here, in the helper, it travels with the entry)
    return Prepared(parsed, kept, capped, filings)


class Filed:
    """A filer handing back the filings a helper made for these very entries; anything else
    (an entry it did not see) the poller's own processor files."""

    def __init__(self, filer: Filer, prepared: Prepared) -> None:
        self._filer = filer
        self._filings = prepared.filings or {}
        self._entries = {id(e) for e in prepared.kept.entries}

    @property
    def index(self) -> StoryIndex | None:
        return self._filer.index

    def file(self, source_id: str, entry: Entry) -> Filing:
        return self.file_all(source_id, [entry])[0]

    def file_all(self, source_id: str, entries: Sequence[Entry]) -> list[Filing]:
        made = [
            self._filings.get(entry.key) if id(entry) in self._entries else None
            for entry in entries
        ]
        return file_missing(self._filer, source_id, entries, made)


# -- in a helper process ----------------------------------------------------------------------

_processor: Processor | None = None


def _start(config: Config) -> None:
    global _processor
    malloc.steady()
    _processor = Processor(config, index=False)


def _prepare_here(
    body: bytes, url: str, now: datetime, content_type: str | None, source_id: str
) -> Prepared:
    assert _processor is not None, "helper process not started"
    return prepare(_processor, body, url, now, content_type, source_id, file=True)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers' cpusets set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def helpers_for(config: Config, sources: int) -> int:
    """How many helper processes a poll of `sources` sources gets under this config. Auto is one
    helper where two cores are usable: the poller (fetching, storing, the story index) and one
    helper fill two cores. A second helper made a first pass no faster (1,000 sources: 4.09-4.27 s
    against 3.91-4.25 with one; 10,000: 40.8-42.8 s against 37.4-38.4) and cost 21-24 MiB more
    (PSS) of the memory the tree is allowed."""
    wanted = config.polling.processes
    if wanted == 0:
        return 1 if sources >= PROCESS_FROM and usable_cores() >= 2 else 0
    return wanted - 1


class Helpers:
    """The helper processes of one poller, started when first wanted, replaced when the config
    changes (they file with its rules), and given up on for good if one dies."""

    def __init__(self) -> None:
        self._pool: HelperPool | None = None
        self._size = 0
        self._config: Config | None = None
        self._broken = False
        self._lock = threading.Lock()
        self._counting = threading.Lock()
        self.prepared = 0  # documents the helpers prepared

    def want(self, config: Config, size: int) -> None:
        """Helpers for this config, started when a document first needs one: a poll where
        every source answers 304 never starts them."""
        with self._lock:
            if self._broken or size <= 0:
                return
            if self._config is config and self._size >= size:
                return
            old, self._pool = self._pool, None
            if old is not None:
                old.shutdown(wait=False, cancel_futures=False)
            self._size, self._config = size, config

    def _started(self, config: Config) -> HelperPool | None:
        with self._lock:
            if self._broken or self._config is not config or self._size <= 0:
                return None
            if self._pool is None:
                # new processes, not forks: the poller has threads, and a forked child may
                # inherit a held lock
                from aggregator.helperpool import HelperPool  # (not in the helpers themselves)

                try:
                    self._pool = HelperPool(
                        self._size,
                        f"{__name__}:_start",
                        f"{__name__}:_prepare_here",
                        (config,),
                        pipe_bytes=PIPE_BYTES,
                        stamp="aggregator.config.cache:code",
                    )
                except OSError as exc:  # no process could be started (limits, resources)
                    log.warning("no parsing helper could start (%s); parsing in the poller", exc)
                    self._broken = True
                    return None
            return self._pool

    def submit(
        self,
        processor: Processor,
        body: bytes,
        url: str,
        now: datetime,
        content_type: str | None,
        source_id: str,
    ) -> Future[Prepared] | None:
        """The document handed to a helper (its future raises ParseError for a body that is no
        feed, BrokenProcessPool if the helper died: see `broken`); None when there is none."""
        pool = self._pool if self._config is processor.config else None
        if pool is None and (pool := self._started(processor.config)) is None:
            return None
        try:
            return pool.submit(body, url, now, content_type, source_id)
        except BrokenExecutor:  # (the pool's BrokenProcessPool)
            self.broken()
            return None

    def broken(self) -> None:
        """A helper died: documents are prepared in the poller from now on."""
        with self._lock:
            if not self._broken:
                log.warning("a parsing helper process died; parsing in the poller from now on")
            self._broken = True
            self._pool = None

    def done(self) -> None:
        with self._counting:
            self.prepared += 1

    def prepare(
        self,
        processor: Processor,
        body: bytes,
        url: str,
        now: datetime,
        content_type: str | None,
        source_id: str,
    ) -> Prepared | None:
        """The document prepared in a helper; None when there is none (prepare it here)."""
        future = self.submit(processor, body, url, now, content_type, source_id)
        if future is None:
            return None
        try:
            done = future.result()
        except BrokenExecutor:  # (the pool's BrokenProcessPool)
            self.broken()
            return None
        self.done()
        return done

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
