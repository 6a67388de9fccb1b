"""Rendered documents, cached until their items change: the web app and the export both ask here.

A document is rebuilt only when storage's revision counter has moved (something was added,
edited, refiled, merged or pruned) *and* the page's entries differ from what was rendered, or
when an output's maximum age drops its oldest entry. The revision is read at most once per
`refresh` seconds, so a busy web process does one small query a second, not one per request.
Rendering is deterministic (no build times), so the body hash is a strong ETag that survives
restarts and is the same in every web replica.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import cached_property

from aggregator.config import Config, Digest
from aggregator.exceptions import BadRequestError, NotPublishedError
from aggregator.opml import OpmlFeed, write_outlines
from aggregator.publish import feeds, jsonfeed, pages
from aggregator.publish import search as searching
from aggregator.publish.catalog import (
    CATALOGUED,
    KIND_TITLES,
    MEDIA_TYPES,
    Catalog,
    Kind,
    Publication,
)
from aggregator.publish.view import (
    FeedView,
    Links,
    decode_cursor,
    encode_cursor,
    entry_view,
)
from aggregator.storage import Storage, utcnow

HTML = "text/html; charset=utf-8"
OPML = "text/x-opml; charset=utf-8"
WRITERS: dict[str, Callable[[FeedView], bytes]] = {
    "atom": feeds.atom,
    "rss": feeds.rss,
    "json": jsonfeed.render,
}
CACHE_SIZE = 2048  # documents kept: first pages, the index and OPML (a few per publication)
PAGE_CACHE_SIZE = 256  # archive pages (`?before=`) kept, apart, so a flood of them evicts no feed
PREVIOUS_WALK = 25  # pages walked from the top to find an archive page's newer neighbour
WALKS_KEPT = 64  # publications whose page boundaries are remembered (per storage revision)
WALK_TTL = timedelta(minutes=1)  # how long a walk stands for an output whose items age out
LOCK_STRIPES = 64  # builders of different documents rarely wait for each other
FRONT_PAGE_STORIES = 5  # stories of each section on the front page

Position = tuple[datetime, int]  # (first seen, item id): where an archive page starts


@dataclass(frozen=True)
class Document:
    """A rendered response body with what HTTP caching needs."""

    body: bytes
    media_type: str
    etag: str  # strong, quoted, from the body's hash
    last_modified: datetime | None = None
    revision: int = -1
    expires: datetime | None = None  # when an entry ages out of a max_age filter
    fingerprint: str = ""  # of the view it was rendered from
    entries: int = 0

    @cached_property
    def http_last_modified(self) -> str:
        return format_datetime(self.last_modified, usegmt=True) if self.last_modified else ""

    @property
    def gzipped(self) -> bytes:
        return _gzipped(self)

    @property
    def gzip_etag(self) -> str:
        """Another representation, another strong ETag (RFC 9110 8.8.3)."""
        return self.etag[:-1] + '-gz"'


_GZ: dict[str, bytes] = {}
_GZ_LOCK = threading.Lock()


def _gzipped(document: Document) -> bytes:
    with _GZ_LOCK:
        found = _GZ.get(document.etag)
    if found is None:
        found = gzip.compress(document.body, compresslevel=6, mtime=0)
        with _GZ_LOCK:
            if len(_GZ) >= CACHE_SIZE:
                _GZ.pop(next(iter(_GZ)))
            _GZ[document.etag] = found
    return found


def make_document(body: bytes, media_type: str, **kwargs: object) -> Document:
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()[:18]).decode()
    return Document(body, media_type, f'"{digest}"', **kwargs)  # type: ignore[arg-type]


def _cursor(before: str | None) -> Position | None:
    if before is None:
        return None
    cursor = decode_cursor(before)
    if cursor is None:
        raise BadRequestError(
            f"'before' must be a paging cursor such as 1764000000000000.42, not {before[:60]!r}"
        )
    return cursor


@dataclass
class _Walk:
    """The last positions of a publication's first pages, as read from the top (each page's
    `next` cursor): shared by every archive page of one revision, and extended under `lock` only
    as deep as a page asks, so finding a page's newer neighbour is one walk per revision."""

    revision: int
    made: datetime
    lock: threading.Lock = field(default_factory=threading.Lock)
    ends: list[Position] = field(default_factory=list)
    complete: bool = False  # a short page was reached: no page after the last end


def source_names(storage: Storage, config: Config) -> tuple[dict[str, str], dict[str, str]]:
    """Each source's name (the config's title, else the feed's own, else its id) and feed URL."""
    configured = {s.id: s.title for s in config.sources if s.title}
    states = storage.sources()
    titles = {s.id: configured.get(s.id) or s.feed_title or s.title or s.id for s in states}
    titles.update(configured)
    return titles, {s.id: s.url for s in states}


def base_url(config: Config) -> str:
    url = config.server.base_url or f"http://{config.server.host}:{config.server.port}/"
    return url if url.endswith("/") else url + "/"


class Publisher:
    """Documents for every publication of one config; safe to use from many threads."""

    def __init__(
        self,
        storage: Storage,
        config: Config,
        *,
        clock: Callable[[], datetime] = utcnow,
        refresh: float = 1.0,
        paged: bool = True,
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.since = clock().replace(microsecond=0)  # the date of a feed with no entries
        self._refresh = refresh
        self.paged = paged  # False for a static export, where `?before=` pages cannot exist
        # whether this process answers digest sign-ups (the web app says, when it has them): a
        # static export or a web process with no signing key links to no sign-up page
        self.signups = False
        self.searchable = False  # the same for search: a static export has no /search to ask
        self._revision = -1
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, ...], Document] = OrderedDict()
        self._pages: OrderedDict[tuple[str, ...], Document] = OrderedDict()
        self._walks: OrderedDict[str, _Walk] = OrderedDict()
        self._building = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._source_titles: dict[str, str] = {}
        self._source_urls: dict[str, str] = {}
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take a reloaded config: outputs, titles and limits change, so every cached document
        goes (an unchanged one is rebuilt with the same bytes and ETag)."""
        with self._lock:
            self.config = config
            self.catalog = Catalog(config)
            self.base = base_url(config)
            self.site_title = config.publishing.title
            self.hub = config.publishing.hub
            self._cache.clear()
            self._pages.clear()
            self._walks.clear()
            self._sources_revision = -2

    @property
    def templates(self) -> str | None:
        """The editors' own template folder, if any: it replaces pages' templates too."""
        return self.config.publishing.templates

    # -- freshness ------------------------------------------------------------------------------

    def check(self) -> int:
        """Read the storage revision now (a web app's background task calls this each second)."""
        revision = self.storage.revision()
        with self._lock:
            self._revision = revision
            self._checked = time.monotonic()
        return revision

    def revision(self) -> int:
        if time.monotonic() - self._checked >= self._refresh:
            return self.check()
        return self._revision

    def _store(self, key: tuple[str, ...]) -> OrderedDict[tuple[str, ...], Document]:
        """Archive pages (a key ending in a cursor) are kept apart from everything else."""
        return self._pages if len(key) == 3 and key[2] else self._cache

    def cached(self, *key: str) -> Document | None:
        """The document for `key` if it is known to be current, without touching the database."""
        store = self._store(key)
        with self._lock:
            document = store.get(key)
            if document is None or document.revision != self._revision:
                return None
            store.move_to_end(key)
        if document.expires is not None and self.clock() >= document.expires:
            return None
        return document

    def _remember(self, key: tuple[str, ...], document: Document) -> Document:
        store = self._store(key)
        size = PAGE_CACHE_SIZE if store is self._pages else CACHE_SIZE
        with self._lock:
            store[key] = document
            store.move_to_end(key)
            while len(store) > size:
                store.popitem(last=False)
        return document

    def _build(
        self, key: tuple[str, ...], make: Callable[[Document | None, int], Document]
    ) -> Document:
        """The cached document, or `make(previous, revision)`; one builder per key at a time."""
        found = self.cached(*key)
        if found is not None and found.revision == self.revision():
            return found
        with self._building[hash(key) % LOCK_STRIPES]:
            revision = self.revision()
            found = self.cached(*key)
            if found is not None and found.revision == revision:
                return found
            with self._lock:
                previous = self._store(key).get(key)
            return self._remember(key, make(previous, revision))

    # -- what is published ---------------------------------------------------------------------

    def publication(self, kind: str, publication_id: str, fmt: str | None = None) -> Publication:
        publication = self.catalog.get(kind, publication_id)
        if publication is None:
            raise NotPublishedError(f"nothing is published at /{kind}/{publication_id}")
        if fmt is not None and fmt not in publication.formats:
            raise NotPublishedError(f"/{kind}/{publication_id} is not published as {fmt}")
        return publication

    def _sources(self) -> tuple[dict[str, str], dict[str, str]]:
        """Source names and feed URLs: the config's titles, else the feed's own (read again
        whenever items changed, since a source's first poll brings its title with its items)."""
        if self._sources_revision != self._revision:
            self._source_titles, self._source_urls = source_names(self.storage, self.config)
            self._sources_revision = self._revision
        return self._source_titles, self._source_urls

    def view(
        self, publication: Publication, before: str | None = None, limit: int | None = None
    ) -> FeedView:
        """One page of a publication, read from storage now (`limit`: fewer entries than the
        publication's, as the front page shows)."""
        cursor = _cursor(before)
        now = self.clock()
        rules = self.catalog.filter_of(publication)
        count = min(limit, publication.limit) if limit is not None else publication.limit
        selected = self.storage.select_items(
            rules.selection_at(now),
            count + 1,
            lambda item: rules.accepts_at(item, now),
            before=cursor,
            shown=rules.accepts_text,
        )
        more = self.paged and len(selected) > count
        selected = selected[:count]
        titles, urls = self._sources()
        every_item = publication.filter.every_item
        entries = tuple(
            entry_view(s, self.catalog, self.base, titles, urls, every_item) for s in selected
        )
        last = selected[-1].position if selected else None
        return FeedView(
            publication=publication,
            links=Links(self.base, publication),
            entries=entries,
            before=encode_cursor(cursor) if cursor is not None else None,
            next=encode_cursor(last) if more and last is not None else None,
            previous=self._previous(publication, cursor) if cursor is not None else None,
            hub=self.hub,
            site_title=self.site_title,
            since=self.since,
        )

    def _previous(self, publication: Publication, cursor: Position) -> str:
        """The cursor of the page just newer than `cursor` ('' for the first page), found on the
        walk of pages from the top (capped: deep archive pages point back to the first)."""
        walk = self._walk(publication)
        with walk.lock:
            while not walk.complete and len(walk.ends) < PREVIOUS_WALK:
                if walk.ends and walk.ends[-1] <= cursor:
                    break
                self._extend(publication, walk)
            ends = list(walk.ends)
            complete = walk.complete
        newer = [end for end in ends if end > cursor]
        if len(newer) == len(ends) and not complete:
            return ""  # deeper than the walk goes: back to the first page
        return encode_cursor(newer[-1]) if newer else ""

    def _walk(self, publication: Publication) -> _Walk:
        """This revision's walk of the publication's pages (a new one when items changed)."""
        revision, now = self.revision(), self.clock()
        with self._lock:
            walk = self._walks.get(publication.key)
            stale = walk is None or walk.revision != revision
            if walk is not None and publication.filter.max_age is not None:
                stale = stale or now - walk.made >= WALK_TTL
            if walk is None or stale:
                walk = self._walks[publication.key] = _Walk(revision, now)
            self._walks.move_to_end(publication.key)
            while len(self._walks) > WALKS_KEPT:
                self._walks.popitem(last=False)
        return walk

    def _extend(self, publication: Publication, walk: _Walk) -> None:
        """Read the page after the walk's last end, and note where it ends."""
        now = self.clock()
        rules = self.catalog.filter_of(publication)
        selected = self.storage.select_items(
            rules.selection_at(now),
            publication.limit,
            lambda item: rules.accepts_at(item, now),
            before=walk.ends[-1] if walk.ends else None,
            shown=rules.accepts_text,
        )
        last = selected[-1].position if len(selected) == publication.limit else None
        if last is None:
            walk.complete = True
        else:
            walk.ends.append(last)

    def _expires(self, publication: Publication, view: FeedView) -> datetime | None:
        max_age = publication.filter.max_age
        if max_age is None or not view.entries:
            return None
        return min(e.published for e in view.entries) + max_age

    def _view_document(
        self,
        publication: Publication,
        before: str | None,
        fmt: str,
        write: Callable[[FeedView], bytes],
        media_type: str,
    ) -> Document:
        def make(previous: Document | None, revision: int) -> Document:
            view = self.view(publication, before)
            fingerprint = view.fingerprint
            expires = self._expires(publication, view)
            if previous is not None and previous.fingerprint == fingerprint:
                return replace(previous, revision=revision, expires=expires)
            # Last-Modified: the newest entry's time when first rendered (the same in every
            # process), the time of the change when this process sees one (an entry dropping
            # out changes no entry's time), never later than now
            now = self.clock().replace(microsecond=0)
            modified = min(view.updated or now, now) if previous is None else now
            return make_document(
                write(view),
                media_type,
                last_modified=modified,
                revision=revision,
                expires=expires,
                fingerprint=fingerprint,
                entries=len(view.entries),
            )

        canonical = _cursor(before)
        key = (publication.key, fmt, encode_cursor(canonical) if canonical else "")
        return self._build(key, make)

    def feed(self, kind: str, publication_id: str, fmt: str, before: str | None = None) -> Document:
        publication = self.publication(kind, publication_id, fmt)
        media_type = f"{MEDIA_TYPES[fmt]}; charset=utf-8"
        return self._view_document(publication, before, fmt, WRITERS[fmt], media_type)

    def page(self, kind: str, publication_id: str, before: str | None = None) -> Document:
        publication = self.publication(kind, publication_id)
        return self._view_document(
            publication,
            before,
            "html",
            lambda v: pages.preview(v, self.templates, self._search_url).encode(),
            HTML,
        )

    @property
    def _search_url(self) -> str | None:
        return f"{self.base}search" if self.searchable else None

    def index(self) -> Document:
        """The front page: each section's latest stories, every feed, the digests; made again
        when what is stored changes (its stories are read as the sections' feeds are)."""

        def make(previous: Document | None, revision: int) -> Document:
            latest = []
            for publication in self.catalog.of_kind(Kind.SECTIONS):
                view = self.view(publication, limit=FRONT_PAGE_STORIES)
                if view.entries:
                    latest.append(pages.Latest(publication.title, view.links.page, view.entries))
            body = pages.index(
                self.catalog,
                self.base,
                self.site_title,
                self.templates,
                tuple(latest),
                self._digests(),
                self._search_url,
            ).encode()
            if previous is not None and previous.body == body:
                return replace(previous, revision=revision)
            return make_document(body, HTML, revision=revision)

        return self._build(("index",), make)

    def search(self, asked: searching.Asked, fmt: str) -> Document:
        """A page of a reader's search (`fmt` "html" or a feed format), read by
        `searching.asked`; SearchRefusedError for one too costly to run."""
        key = asked.key(fmt)
        query, number, scope = asked.query, asked.page, asked.scope
        media_type = HTML if fmt == "html" else f"{MEDIA_TYPES[fmt]}; charset=utf-8"

        def make(previous: Document | None, revision: int) -> Document:
            self.revision()
            titles, urls = self._sources()
            view = searching.view(
                self.storage,
                self.catalog,
                self.base,
                self.site_title,
                self.since,
                searching.Sources(titles, urls),
                query,
                number,
                scope,
            )
            if fmt == "html":
                pending = self.storage.search_pending()
                body = pages.search(
                    self.base,
                    self.site_title,
                    query.text,
                    view,
                    "",
                    pending,
                    self.templates,
                    self._scopes(scope),
                ).encode()
            else:
                body = WRITERS[fmt](view)
            expires = self.clock() + searching.CACHE_FOR
            if previous is not None and previous.body == body:
                return replace(previous, revision=revision, expires=expires)
            # no Last-Modified: an older item newly matching changes the results but not the
            # newest date in them, so If-Modified-Since would answer 304 wrongly; the ETag holds
            return make_document(
                body, media_type, revision=revision, expires=expires, entries=len(view.entries)
            )

        return self._build(key, make)

    def search_form(self, text: str = "", problem: str = "") -> bytes:
        """The search page with no results: the empty form, or a refused query and why."""
        page = pages.search(
            self.base,
            self.site_title,
            text,
            None,
            problem,
            0,
            self.templates,
            self._scopes(searching.Scope()),
        )
        return page.encode()

    def _scopes(self, scope: searching.Scope) -> pages.Scopes:
        """The sections and topics a search may be narrowed to, and which are chosen."""
        return pages.Scopes(
            tuple((p.id, p.title) for p in self.catalog.of_kind(Kind.SECTIONS)),
            tuple((p.id, p.title) for p in self.catalog.of_kind(Kind.TOPICS)),
            scope.section or "",
            scope.topic or "",
        )

    def _digests(self) -> tuple[pages.DigestListing, ...]:
        listed = []
        for digest in self.config.digests:
            listed.append(
                pages.DigestListing(
                    digest.title,
                    self.digest_schedule(digest.id),
                    f"{self.base}digests/{digest.id}/subscribe" if self.signups else "",
                    self.digest_holds(digest.id),
                )
            )
        return tuple(listed)

    def _digest(self, digest_id: str) -> Digest:
        found = next((d for d in self.config.digests if d.id == digest_id), None)
        if found is None:
            raise NotPublishedError(f"no digest {digest_id}")
        return found

    def digest_schedule(self, digest_id: str) -> str:
        """When a digest comes, in words: "every day at 07:00, London time"."""
        from aggregator.cronwords import describe

        digest = self._digest(digest_id)
        return describe(digest.schedule, digest.timezone or self.config.defaults.timezone)

    def digest_holds(self, digest_id: str) -> str:
        """What a digest holds, in words, for its sign-up page and the front page: "the
        stories in World and Opinion about Palestine, first seen since the last one (at most
        50)"."""
        digest = self._digest(digest_id)
        catalog = self.catalog
        if digest.output is not None:
            output = next((o for o in self.config.outputs if o.id == digest.output), None)
            what = f"the stories of “{output.title if output else digest.output}”"
        else:
            rules = digest.filter
            what = "the stories"
            if rules is not None and rules.sections:
                what += " in " + _either(
                    [catalog.section_titles.get(s, s) for s in rules.sections], "and"
                )
            if rules is not None and rules.topics:
                what += " about " + _either(
                    [catalog.topic_titles.get(t, t) for t in rules.topics], "or"
                )
            if rules is not None and rules.sources:
                titles, _ = self._sources()
                what += " from " + _either([titles.get(s, s) for s in rules.sources], "and")
            if what == "the stories":
                what = "every story"
        return f"{what}, first seen since the last one (at most {digest.max_items})"

    def opml(self) -> Document:
        """Every publication, one folder per kind, for one-click import into a reader."""

        def make(previous: Document | None, revision: int) -> Document:
            if previous is not None:
                return replace(previous, revision=revision)
            groups = []
            for kind in CATALOGUED:
                listed = []
                for publication in self.catalog.of_kind(kind):
                    links = Links(self.base, publication)
                    fmt = publication.formats[0]
                    listed.append(OpmlFeed(links.feed(fmt), publication.title, (), links.page))
                groups.append((KIND_TITLES[kind], listed))
            body = write_outlines(self.site_title, groups)
            return make_document(body, OPML, revision=revision)

        return self._build(("opml",), make)

    def error(self, status: int, heading: str, message: str) -> bytes:
        return pages.error(
            status, heading, message, self.base, self.site_title, self.templates
        ).encode()

    def every_document(self) -> Iterator[tuple[str, Document]]:
        """Each document's path under the base URL, for a static export (first pages only)."""
        yield "index.html", self.index()
        yield "opml.xml", self.opml()
        for publication in self.catalog:
            yield f"{publication.key}.html", self.page(publication.kind, publication.id)
            for fmt in publication.formats:
                yield (
                    f"{publication.key}.{fmt}",
                    self.feed(publication.kind, publication.id, fmt),
                )


def _either(names: list[str], word: str) -> str:
    """ "World", "World and Opinion", "World, Opinion and Sport"."""
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} {word} {names[-1]}"
