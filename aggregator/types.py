"""Domain types shared by the stages: small frozen dataclasses, datetimes always aware UTC.

The config types (Source, Section, Topic, Output, Digest) live in `aggregator.config`, declared
once with their YAML help text; these are the types of what the service learns and stores.
A stage hands storage an "intent" (FetchRecord) and gets back plain values, never rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from aggregator.memo import cached_property


def _json_writer() -> Callable[[Any], str]:
    """json.dumps(value, ensure_ascii=False), for an entry's digest: one encoder for every entry
    (json.dumps made one each time), its strings written by the C part where it was built
    (json's own escaper goes a character at a time, twice: some 3% of a helper's work on a
    document, for its entries' digests). tests/test_speedups.py holds the two equal."""
    from aggregator import speedups

    encoder = json.JSONEncoder(ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if speedups.native is None or make is None:
        return encoder.encode
    escape = speedups.native.json_string
    try:  # json's own C encoder, as JSONEncoder.iterencode makes it, given that escaper
        chunks = make(None, encoder.default, escape, None, ": ", ", ", False, False, True)
    except TypeError:  # another Python's arguments: json's own escaper then
        return encoder.encode
    return lambda value: "".join(chunks(value, 0))


_digest_json: Callable[[Any], str] | None = None


@dataclass(frozen=True)
class SourceState:
    """What the service knows about one source between polls."""

    id: str
    url: str
    fetch_url: str
    title: str
    enabled: bool
    in_config: bool
    interval: timedelta
    next_due_at: datetime
    etag: str | None = None
    last_modified: str | None = None
    last_fetched_at: datetime | None = None
    last_success_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    gone_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    feed_title: str | None = None
    last_warning: str | None = None
    last_entry_count: int | None = None
    discovered: bool = False  # `url` is a web page; `fetch_url` is the feed found on it
    last_article_error: str | None = None  # full_text: article pages that could not be read

    @property
    def moved(self) -> bool:
        """The feed is polled at another address than feeds.yaml gives (it answered a permanent
        redirect, or the address is a page whose feed was found): editors should update it."""
        return self.fetch_url != self.url


@dataclass(frozen=True)
class SyncReport:
    """How applying the config changed the stored sources."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchRecord:
    """The outcome of one poll of a source, handed to storage in one piece; releases the lease."""

    source_id: str
    fetched_at: datetime
    next_due_at: datetime
    status: int | None = None
    ok: bool = True
    error: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    permanent_url: str | None = None
    gone: bool = False
    warning: str | None = None
    entry_count: int | None = None
    feed_title: str | None = None
    discovered_url: str | None = None  # the feed found on the page at the source's address


@dataclass(frozen=True)
class Enclosure:
    url: str
    type: str = ""
    length: int | None = None


@dataclass(frozen=True)
class Entry:
    """One entry of a feed document, normalised at the parse boundary.

    `key` is stable for the same entry across polls (guid, else link, else a content hash);
    summary and content are already sanitised HTML.
    """

    key: str
    title: str
    link: str | None = None
    canonical_link: str | None = None
    guid: str | None = None
    summary: str = ""
    content: str = ""
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    enclosures: tuple[Enclosure, ...] = ()
    language: str | None = None
    image: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    # the publisher's own filing, read off the article page (full_text sources): (kind, term),
    # kind one of breadcrumb, section, keyword, tag, label; not part of what a feed edit changes
    publisher: tuple[tuple[str, str], ...] = ()
    # a podcast episode's iTunes tags (not part of the digest either: they come and go with
    # the parser that read them, and are no edit a reader sees)
    duration: int | None = None  # seconds
    explicit: bool | None = None

    @cached_property
    def digest(self) -> str:
        """A digest of what a reader sees; equal digests mean the publisher changed nothing.

        The `updated` date is left out: some feeds stamp every entry with the time of the
        request, which would make every poll look like an edit. Remembered on the entry (and
        pickled with it): a helper process makes it, and the poller, whose time is the scarcer,
        reads it.
        """
        parts = [
            self.title,
            self.link,
            self.guid,
            self.summary,
            self.content,
            list(self.authors),
            list(self.categories),
            [(e.url, e.type, e.length) for e in self.enclosures],
            self.language,
            self.image,
            self.published.isoformat() if self.published else None,
        ]
        global _digest_json
        if _digest_json is None:
            _digest_json = _json_writer()
        return hashlib.sha256(_digest_json(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Item:
    """A stored entry: what a source published plus what the service decided about it."""

    id: int
    source_id: str
    entry: Entry
    first_seen_at: datetime
    last_seen_at: datetime
    changed_at: datetime
    section_id: str | None = None
    story_id: int | None = None  # None: a story of its own (no other item repeats it)
    topics: tuple[str, ...] = field(default_factory=tuple)
    article_error: str | None = None  # full_text: why its article page gave no text

    @property
    def published(self) -> datetime:
        """When the item was published, or first seen when its feed gave no (plausible) date."""
        return self.entry.published or self.first_seen_at


@dataclass(frozen=True)
class ArticleFetch:
    """One article page fetched for an item of a `full_text` source: its main text, or why
    there is none; either way the page is not fetched again."""

    item_id: int
    html: str | None
    error: str | None
    fetched_at: datetime
    transient: bool = False  # a failure that may pass (timeout, network, 429, 5xx): tried again
    publisher: tuple[tuple[str, str], ...] = ()
    published: datetime | None = None  # kept where the feed gave no date
    modified: datetime | None = None  # kept where the feed gave no update date
    language: str | None = None  # the page's own (a feed's is the channel's, for every item)
    image: str | None = None  # the page's og:image, kept where the feed gave no image
    canonical: str | None = None  # the page's <link rel="canonical">, checked (poll.py)


@dataclass(frozen=True, init=False)
class Filing:
    """Where processing files a new or edited entry, and why; storage keeps the reasons."""

    section_id: str | None = None
    section_reason: Mapping[str, Any] | None = None
    # topic id -> reason, as the JSON text storage keeps (made where the item is filed, often a
    # helper process: text pickles and stores as it is)
    topics: Mapping[str, str] = field(default_factory=dict)
    fingerprint: bytes | None = None

    def __init__(
        self,
        section_id: str | None = None,
        section_reason: Mapping[str, Any] | None = None,
        topics: Mapping[str, str] | None = None,
        fingerprint: bytes | None = None,
    ) -> None:
        # written straight into the instance's dict: a frozen dataclass's own __init__ sets each
        # through object.__setattr__, twice the cost, for every item filed
        values = self.__dict__
        values["section_id"] = section_id
        values["section_reason"] = section_reason
        values["topics"] = {} if topics is None else topics
        values["fingerprint"] = fingerprint


@dataclass(frozen=True)
class Match:
    """A stored item whose text is alike, and how alike (estimated Jaccard similarity)."""

    item_id: int
    score: float


class StoryIndex(Protocol):
    """The similarity index storage consults (and feeds) while linking new items to stories."""

    watermark: int
    window: timedelta

    def similar_many(
        self, fps: Sequence[bytes], whens: Sequence[datetime], after: int = 0
    ) -> list[list[Match]]: ...

    def similar_within(
        self, fps: Sequence[bytes], whens: Sequence[datetime]
    ) -> list[list[tuple[int, float]]]: ...

    def confirm(self, fp: bytes, candidates: Sequence[tuple[int, bytes]]) -> list[Match]: ...

    def add_many(self, rows: Iterable[tuple[int, bytes, datetime]]) -> None: ...

    def expire(self, now: datetime) -> int: ...


class Filer(Protocol):
    """Files entries as storage saves them: only new and edited entries are filed."""

    @property
    def index(self) -> StoryIndex | None:
        """Where alike items are found; None files every item as its own story."""
        ...

    def file(self, source_id: str, entry: Entry) -> Filing: ...

    def file_all(self, source_id: str, entries: Sequence[Entry]) -> list[Filing]:
        """`file` for each of several entries of one source (a filer may do them together)."""
        ...


def file_missing(
    filer: Filer, source_id: str, entries: Sequence[Entry], made: Sequence[Filing | None]
) -> list[Filing]:
    """`made` (a filing per entry, None where there is none yet), with the missing ones filed
    by `filer` in one call: filers that hand back filings made elsewhere (a helper process, a
    plan) file the rest together, as a document is filed."""
    filled = list(made)
    missing = [n for n, filing in enumerate(filled) if filing is None]
    if missing:
        filed = filer.file_all(source_id, [entries[n] for n in missing])
        for n, filing in zip(missing, filed, strict=True):
            filled[n] = filing
    return [filing for filing in filled if filing is not None]


@dataclass(frozen=True)
class StoryMember:
    """One item of a story, how it joined, and whether it leads the story."""

    item: Item
    reason: Mapping[str, Any]
    lead: bool


@dataclass(frozen=True)
class ItemDetails:
    """Everything `aggregator explain` shows about one item."""

    item: Item
    section_reason: Mapping[str, Any] | None
    topic_reasons: Mapping[str, Mapping[str, Any]]
    story_reason: Mapping[str, Any] | None
    pinned: bool
    members: tuple[StoryMember, ...] = ()


@dataclass(frozen=True)
class Selection:
    """Which items an output or digest takes (the storage side of a config `Filter`)."""

    sections: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    every_item: bool = False  # False: one entry per story
    seen_since: datetime | None = None  # only items first seen at or after this

    def matches(self, item: Item) -> bool:
        """The selection's own test (storage runs the same one in SQL)."""
        return (
            (self.seen_since is None or item.first_seen_at >= self.seen_since)
            and (not self.sections or item.section_id in self.sections)
            and (not self.sources or item.source_id in self.sources)
            and (not self.topics or not set(self.topics).isdisjoint(item.topics))
        )


@dataclass(frozen=True)
class Selected:
    """An item to publish, with the story's other items ("also reported by")."""

    item: Item
    also: tuple[Item, ...] = ()
    position: tuple[datetime, int] | None = None  # (first seen, item id): where paging resumes
    opener: tuple[str, str] | None = None  # (source, key) of the item that opened its story


@dataclass(frozen=True)
class Refiling:
    """A stored item's filing, as recategorising reads it and then rewrites it."""

    item: Item
    section_reason: Mapping[str, Any] | None
    topic_reasons: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class SaveReport:
    """What storing a batch of entries did."""

    new: tuple[int, ...] = ()
    updated: tuple[int, ...] = ()
    unchanged: int = 0
    merged: int = 0  # new items linked to another item's story


class RunStatus(StrEnum):
    SENDING = "sending"
    DONE = "done"


@dataclass(frozen=True)
class DigestRun:
    """One period of one digest, claimed by one worker at a time."""

    id: int
    digest_id: str
    period_start: datetime
    period_end: datetime
    status: RunStatus
    claimed_by: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    finished_at: datetime | None = None


class DeliveryStatus(StrEnum):
    SENT = "sent"  # the server accepted it
    FAILED = "failed"  # refused for now (4xx, a dropped connection): tried again
    REFUSED = "refused"  # refused for good (5xx): not tried again for this period
    NOTHING = "nothing"  # the recipient's choices left nothing new in this period: no copy


WEEKLY = "weekly"  # the frequency a recipient picks where a digest offers `weekly`


@dataclass(frozen=True)
class Choice:
    """What one recipient wants of a digest: its sections (None: all of them), only stories on
    these topics (empty: every story), and how often (None: the digest's own schedule)."""

    sections: tuple[str, ...] | None = None
    topics: tuple[str, ...] = ()
    frequency: str | None = None

    @property
    def narrows(self) -> bool:
        return self.sections is not None or bool(self.topics)


@dataclass(frozen=True)
class Delivery:
    """One recipient's copy of one digest run."""

    run_id: int
    recipient: str
    status: DeliveryStatus
    attempts: int
    at: datetime
    error: str | None = None
    message_id: str | None = None


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True)
class Subscriber:
    """Someone who signed up for a digest on the web (double opt-in)."""

    digest_id: str
    email: str
    status: SubscriberStatus
    created_at: datetime
    confirmed_at: datetime | None = None
    unsubscribed_at: datetime | None = None
