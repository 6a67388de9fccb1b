"""A published feed as plain values: the one model the Atom, RSS, JSON Feed and HTML writers share.

Identity is what subscribers' readers remember, so it is derived from what never changes:
an entry's id is a name-based UUID of the source id and the entry's stable key, taken from the
item that opened the story (its lowest item id), so re-rendering, restarting, re-categorising or
a higher-priority copy taking the lead never changes it. `updated` is the newest of the story's
items' own dates (a feed's updated date, else the moment we saw the item edited, else its published
date), never the time we stored them: one poll must not give every entry the same date.

Stored text is hostile too: `writable` strips what XML cannot carry from everything an entry says,
so one stored control character can never make a document unwritable.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import uuid
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from aggregator.feed.sanitize import clean_html, html_to_text, safe_url
from aggregator.publish.catalog import MEDIA_TYPES, Catalog, Publication
from aggregator.types import Enclosure, Item, Selected

# Fixed forever: changing it would change every published id.
ID_NAMESPACE = uuid.UUID("8f1d0a4e-6c1b-5b7e-9a43-2f6d1c0e9b57")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SUMMARY_CHARS = 400


def entry_id(source_id: str, key: str, story: bool = True) -> str:
    """A story's id (from the item that opened it) differs from its items' own ids (used where
    every item is listed), so one id never names two different entries in our feeds."""
    name = ("story\n" if story else "") + source_id + "\n" + key
    return f"urn:uuid:{uuid.uuid5(ID_NAMESPACE, name)}"


def feed_id(publication_key: str) -> str:
    """The same for every page and format of a publication, wherever it is served from."""
    return f"urn:uuid:{uuid.uuid5(ID_NAMESPACE, 'publication:' + publication_key)}"


def source_feed_id(source_id: str) -> str:
    """An Atom `<source>`'s id: we keep no source feed's own id, so one named after the source
    (not its URL, which moves when a feed does)."""
    return f"urn:uuid:{uuid.uuid5(ID_NAMESPACE, 'source:' + source_id)}"


# What XML 1.0 cannot carry (C0 controls but tab, LF and CR; lone surrogates; U+FFFE, U+FFFF),
# and the C1 controls, which it can but which the W3C validator flags as undecoded bytes.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x80-\x9f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """`text` without the characters no XML document (and no valid UTF-8) can hold."""
    return _NOT_XML.sub("", text) if _NOT_XML.search(text) else text


def _scrubbed(value: Any) -> Any:
    """`value` (a string, or a tuple or dataclass of them) with `xml_text` applied to every
    string; the very same object when nothing changed."""
    if isinstance(value, str):
        return xml_text(value)
    if isinstance(value, tuple):
        items = tuple(_scrubbed(v) for v in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: new
            for f in fields(value)
            if (new := _scrubbed(old := getattr(value, f.name))) is not old
        }
        return replace(value, **changes) if changes else value
    return value


def encode_cursor(position: tuple[datetime, int]) -> str:
    """`before=` value: microseconds since the epoch and an item id, e.g. `1764000000000000.42`."""
    moment, item_id = position
    micros = (moment - EPOCH) // _MICROSECOND
    return f"{micros}.{item_id}"


_CURSOR = re.compile(r"([0-9]{1,24})\.([0-9]{1,24})", re.ASCII)
_MAX_ID = 2**63 - 1


def decode_cursor(text: str) -> tuple[datetime, int] | None:
    """The position in a `before=` value, or None if it is not one."""
    match = _CURSOR.fullmatch(text)
    if match is None or int(match.group(2)) > _MAX_ID:
        return None
    try:
        return EPOCH + int(match.group(1)) * _MICROSECOND, int(match.group(2))
    except OverflowError:
        return None


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - EPOCH


@dataclass(frozen=True)
class Category:
    term: str
    label: str
    scheme: str


@dataclass(frozen=True)
class Also:
    """Another outlet's copy of the story."""

    title: str
    link: str | None
    source: str


_AUDIO = (".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wav", ".flac")
_VIDEO = (".mp4", ".m4v", ".webm", ".mov", ".ogv")
_IMAGES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".svg")


@dataclass(frozen=True)
class Media:
    """An enclosure as a page or a digest shows it: a player for sound and video, a download
    link for anything."""

    url: str
    kind: str  # "audio", "video", "image" (the item's picture, not shown as media) or "file"
    type: str  # the media type, where the feed gave one
    label: str  # "MP3, 24.1 MB": what the download link says


def media_of(enclosure: Enclosure) -> Media:
    path = enclosure.url.split("?", 1)[0].split("#", 1)[0].lower()
    mime = enclosure.type.lower()
    if mime.startswith("image/") or (not mime and path.endswith(_IMAGES)):
        kind = "image"
    elif mime.startswith("audio/") or (not mime and path.endswith(_AUDIO)):
        kind = "audio"
    elif mime.startswith("video/") or (not mime and path.endswith(_VIDEO)):
        kind = "video"
    else:
        kind = "file"
    name = path.rsplit("/", 1)[-1]
    extension = name.rsplit(".", 1)[-1].upper() if "." in name else ""
    what = extension if 0 < len(extension) <= 5 else (mime.split("/")[-1].upper() or "file")
    size = _size(enclosure.length) if enclosure.length else ""
    return Media(enclosure.url, kind, enclosure.type, f"{what}, {size}" if size else what)


def _size(length: int) -> str:
    """A length in bytes as people read it: 812 KB, 24.1 MB, 1.2 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if length >= scale:
            value = length / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{length} bytes"


@dataclass(frozen=True)
class EntryView:
    id: str
    title: str
    link: str | None
    content_html: str  # sanitised, with the story's other sources appended
    summary_text: str  # plain, shortened: for JSON Feed's summary and the HTML preview
    authors: tuple[str, ...]
    categories: tuple[Category, ...]
    enclosures: tuple[Enclosure, ...]
    image: str | None
    language: str | None
    published: datetime
    updated: datetime
    source_id: str
    source_title: str
    source_url: str
    also: tuple[Also, ...]
    duration: int | None = None  # a podcast episode's length in seconds
    explicit: bool | None = None

    @property
    def media(self) -> tuple[Media, ...]:
        """The enclosures that are not the item's picture, as pages and digests show them."""
        return tuple(m for m in map(media_of, self.enclosures) if m.kind != "image")


@dataclass(frozen=True)
class Links:
    """The absolute URLs of one page of one publication."""

    base: str  # ends with '/'
    publication: Publication

    def feed(self, fmt: str, before: str | None = None) -> str:
        url = f"{self.base}{quote(self.publication.key)}.{fmt}"
        return f"{url}?{urlencode({'before': before})}" if before else url

    @property
    def page(self) -> str:
        """The HTML preview."""
        return f"{self.base}{quote(self.publication.key)}"

    def alternates(self) -> list[tuple[str, str, str]]:
        """(format, media type, url) of every format the publication has."""
        return [(f, MEDIA_TYPES[f], self.feed(f)) for f in self.publication.formats]


@dataclass(frozen=True)
class SearchLinks(Links):
    """The URLs of one page of a search's results: its cursor is a page number; `scope` the
    section and topic it looks in, as query parameters."""

    scope: tuple[tuple[str, str], ...] = ()

    def _query(self, page: str | None) -> str:
        params = [("q", self.publication.id), *self.scope]
        if page and page != "1":
            params.append(("page", page))
        return urlencode(params)

    def feed(self, fmt: str, before: str | None = None) -> str:
        return f"{self.base}search.{fmt}?{self._query(before)}"

    @property
    def page(self) -> str:
        return self.page_at(None)

    def page_at(self, number: str | None) -> str:
        return f"{self.base}search?{self._query(number)}"


@dataclass(frozen=True)
class FeedView:
    """One page of a publication, newest first."""

    publication: Publication
    links: Links
    entries: tuple[EntryView, ...]
    before: str | None  # this page's cursor; None on the first page
    next: str | None  # the cursor of the page after this one
    previous: str | None  # the cursor of the page before ('' for the first page)
    hub: str | None
    site_title: str
    # when the publisher started: the date of a document with no entries, which must carry one
    # (Atom's updated); stable while it runs, so an empty feed keeps its ETag
    since: datetime

    @property
    def updated(self) -> datetime | None:
        return max((e.updated for e in self.entries), default=None)

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything a writer puts in a document changes."""
        digest = hashlib.sha256(
            repr(
                (self.entries, self.before, self.next, self.previous, self.hub, self.since)
            ).encode()
        )
        return digest.hexdigest()


def writable(view: FeedView) -> FeedView:
    """The view as a writer may put it in a document: XML-illegal characters gone from every
    entry, whatever reached the database (the same view back when there were none)."""
    entries: tuple[EntryView, ...] = _scrubbed(view.entries)
    site_title = xml_text(view.site_title)
    if entries is view.entries and site_title is view.site_title:
        return view
    return replace(view, entries=entries, site_title=site_title)


def categories(item: Item, catalog: Catalog, base: str) -> tuple[Category, ...]:
    found = []
    if item.section_id is not None:
        title = catalog.section_titles.get(item.section_id, item.section_id)
        found.append(Category(item.section_id, title, f"{base}sections/"))
    for topic in item.topics:
        found.append(Category(topic, catalog.topic_titles.get(topic, topic), f"{base}topics/"))
    return tuple(found)


def shorten(text: str, limit: int = SUMMARY_CHARS) -> str:
    """At most `limit` characters, cut at a word, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:.-\u2013\u2014 ")
    return f"{cut}…"


def entry_view(
    selected: Selected,
    catalog: Catalog,
    base: str,
    source_titles: dict[str, str],
    source_urls: dict[str, str],
    every_item: bool = False,
) -> EntryView:
    item = selected.item
    entry = item.entry
    opener = selected.opener or (item.source_id, entry.key)
    also = tuple(
        Also(
            o.entry.title or o.entry.link or "(untitled)",
            safe_url(o.entry.link),
            _title(o, source_titles),
        )
        for o in sorted(selected.also, key=lambda o: o.id)
    )
    body = entry.content or entry.summary
    if also:
        links = ", ".join(
            f'<a href="{html.escape(a.link)}">{html.escape(a.source)}</a>'
            if a.link
            else html.escape(a.source)
            for a in also
        )
        body = f"{body}\n<p>Also reported by: {links}</p>"
    updated = max(_own_date(i) for i in (item, *selected.also))
    # an XML-illegal title (see `writable`) falls back as an empty one does
    title = (
        xml_text(entry.title).strip()
        or xml_text(shorten(html_to_text(body), 80)).strip()
        or "(untitled)"
    )
    return EntryView(
        id=entry_id(*opener, story=not every_item),
        title=title,
        link=safe_url(entry.link),
        # stored HTML was sanitised when it was parsed; once more here, since what readers get
        # must be safe whatever reached the database. A title is text: escaped, never markup.
        content_html=clean_html(body) or html.escape(title),
        summary_text=shorten(html_to_text(entry.summary or entry.content)),
        authors=entry.authors,
        categories=categories(item, catalog, base),
        enclosures=tuple(e for e in entry.enclosures if safe_url(e.url)),
        image=safe_url(entry.image),
        language=entry.language,
        published=item.published,
        updated=updated,
        source_id=item.source_id,
        source_title=_title(item, source_titles),
        source_url=source_urls.get(item.source_id, ""),
        also=also,
        duration=entry.duration,
        explicit=entry.explicit,
    )


def _own_date(item: Item) -> datetime:
    """When an item last changed by its own account: its feed's updated date, else the moment we
    saw it edited, else its published date (and never before that)."""
    if item.entry.updated is not None:
        moment = item.entry.updated
    elif item.changed_at > item.first_seen_at:
        moment = item.changed_at
    else:
        moment = item.published
    return max(moment, item.published)


def _title(item: Item, source_titles: dict[str, str]) -> str:
    return source_titles.get(item.source_id) or item.source_id


_log = logging.getLogger("aggregator.publish")


def left_out(document: str, entry: EntryView, exc: BaseException) -> None:
    """Say which entry a document was written without, and why (one entry never fails it)."""
    _log.warning(
        "%s: entry %s (source %s, %r) left out: %s",
        document,
        entry.id,
        entry.source_id,
        entry.title[:80],
        exc,
        extra={"entry": entry.id, "source": entry.source_id},
    )
