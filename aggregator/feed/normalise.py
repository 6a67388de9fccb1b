"""From what a format adapter read (RawEntry) to the one Entry every later stage sees.

Adapters (feedparser for RSS/Atom, ours for JSON Feed) only pull fields out; everything that makes
entries comparable happens here, once: stable keys, absolute and canonical links, sanitised HTML,
plain-text titles, aware UTC dates (a missing or future date stays None: the item then dates
from when it was first seen, see `Item.published`).

Nothing one entry carries can fail the document: characters XML cannot hold are removed from every
text, an implausible date (before 1900, or in the future) is dropped, fields are cut to a size the
database and every reader can hold, and an entry that still fails is left out alone. Each of these
comes back as a note, which the poll shows on the source as a warning.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from aggregator import speedups
from aggregator.feed.sanitize import clean_html, html_to_text, safe_url
from aggregator.feed.urls import canonical_url, join
from aggregator.types import Enclosure, Entry

log = logging.getLogger(__name__)

FUTURE_TOLERANCE = timedelta(hours=1)
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
MAX_KEY = 1_000  # UTF-8 bytes of a guid or link used as the key as it is; longer ones are hashed
MAX_INDEXED_URL = 2_000  # bytes of a canonical link matched between stories (btree: 2,704 a row)
MAX_TITLE = 2_000
MAX_URL = 4_000
MAX_LIST = 100  # authors, categories or enclosures kept from one entry
MAX_NAME = 500  # characters of one author or category
MAX_LANGUAGE = 35  # BCP 47 tags are far shorter; the column holds 35
# C0 controls but tab, LF and CR; C1 controls; lone surrogates; U+FFFE and U+FFFF. XML 1.0 cannot
# carry the first, third and fourth at all; the C1 block is never text, only mis-decoding.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """The text without the characters XML cannot carry (one of them would fail a whole feed).
    Every text of every entry is looked at, and nearly none holds one: the look is made in C
    where it was built (a regex search was some 6% of a helper's work on a document)."""
    native = speedups.native
    found = native.not_xml(text) if native is not None else _NOT_XML.search(text) is not None
    return _NOT_XML.sub("", text) if found else text


@dataclass(frozen=True)
class RawEntry:
    """An entry as a format adapter found it: HTML unsanitised, URLs possibly relative."""

    guid: str | None
    title: str
    link: str | None
    summary: str = ""
    content: str = ""
    title_is_html: bool = True
    base: str | None = None  # the entry's own base URL (xml:base), if any
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    enclosures: tuple[Enclosure, ...] = ()
    language: str | None = None
    image: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    problems: tuple[str, ...] = ()  # what the adapter had to drop, said on the source
    duration: int | None = None  # a podcast episode's length in seconds (itunes:duration)
    explicit: bool | None = None  # itunes:explicit, where the feed says


def _absolute(base: str, url: str | None) -> str | None:
    if not url or not url.strip():
        return None
    return join(base, url.strip()) if base else url.strip()


def _key(raw: RawEntry, link: str | None, repeated: bool) -> str:
    """guid, else link, else a digest of title and content; a guid the document repeats for
    different entries is made unique with the entry's link or digest."""
    if raw.guid and not repeated:
        return raw.guid
    own = link or _digest(raw)  # hashing the text only when the key needs it
    return f"{raw.guid}#{own}" if raw.guid else own


def _bounded(key: str) -> str:
    """A key too long to index (a 5,000-digit id; PostgreSQL's btree takes 2,704 bytes a row) is
    replaced by its digest."""
    if len(key) > MAX_KEY // 4 and len(key.encode("utf-8", "replace")) > MAX_KEY:
        return "sha256:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
    return key


def _digest(raw: RawEntry) -> str:
    text = f"{raw.title}\0{raw.content or raw.summary}".encode("utf-8", "replace")
    return "sha256:" + hashlib.sha256(text).hexdigest()[:32]


def _identity(raw: RawEntry) -> str:
    """What tells apart posts that share guid and link: title and date, which an edit of the
    text leaves alone (so an edited post keeps its key)."""
    moment = (raw.published or raw.updated or datetime.min.replace(tzinfo=UTC)).isoformat()
    text = f"{' '.join(raw.title.split())}\0{moment}".encode("utf-8", "replace")
    return hashlib.sha256(text).hexdigest()[:16]


def _clean(raw: RawEntry) -> RawEntry:
    """Every text field without XML-illegal characters, and cut to a size that can be stored."""

    def text(value: str, limit: int | None = None) -> str:
        value = xml_text(value)
        return value[:limit] if limit else value

    def names(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(text(v, MAX_NAME) for v in values[:MAX_LIST])

    language = text(raw.language).strip() if raw.language else None
    return replace(
        raw,
        guid=text(raw.guid) if raw.guid else None,
        title=text(raw.title, MAX_TITLE * 4),
        link=text(raw.link, MAX_URL) if raw.link else None,
        summary=text(raw.summary),
        content=text(raw.content),
        base=text(raw.base, MAX_URL) if raw.base else None,
        authors=names(raw.authors),
        categories=names(raw.categories),
        enclosures=tuple(
            Enclosure(text(e.url, MAX_URL), text(e.type, 200), _length(e.length))
            for e in raw.enclosures[:MAX_LIST]
        ),
        language=language if language and len(language) <= MAX_LANGUAGE else None,
        image=text(raw.image, MAX_URL) if raw.image else None,
    )


def _length(value: int | None) -> int | None:
    """An enclosure's size, if it is one a 64-bit column (and a reader) can hold."""
    return value if value is not None and 0 <= value < 2**53 else None


def _plausible(moment: datetime | None, now: datetime) -> datetime | None:
    """A date in the future is a publisher's mistake: treat it as missing (the item then dates
    from when it was first seen), so it neither tops every list nor changes on every poll. So is
    one before 1900 (`0001-01-01`), which no reader can show."""
    if moment is None or moment > now + FUTURE_TOLERANCE or moment < EARLIEST:
        return None
    return moment


def normalise(
    raws: Sequence[RawEntry], feed_url: str, now: datetime, notes: list[str] | None = None
) -> tuple[Entry, ...]:
    """Entries in document order, one per distinct key (an exact repeat is dropped); what had to
    be dropped or left out is added to `notes`."""
    said = notes if notes is not None else []
    cleaned = [_clean(raw) for raw in raws]
    guid_uses = Counter(raw.guid for raw in cleaned if raw.guid)
    keys = _keys(cleaned, feed_url, guid_uses)
    entries: list[Entry] = []
    dates_dropped = 0
    for index, raw in enumerate(cleaned):
        key = keys[index]
        if key is None:
            continue
        for problem in raw.problems:
            said.append(problem)
        try:
            entry, dropped = _entry(raw, key, feed_url, now)
        except Exception as exc:  # one entry's surprise must not cost the document
            log.warning("entry %r of %s left out: %r", key[:200], feed_url, exc)
            said.append(f"entry {key[:100]!r} left out: {type(exc).__name__}: {exc}"[:300])
            continue
        dates_dropped += dropped
        entries.append(entry)
    if dates_dropped:
        said.append(
            f"{dates_dropped} date{'s' if dates_dropped != 1 else ''} before 1900 or in the "
            "future ignored (those items date from when they were first seen)"
        )
    return tuple(entries)


def _keys(raws: Sequence[RawEntry], feed_url: str, guid_uses: Counter[str]) -> list[str | None]:
    """Each entry's key, None for an empty entry or an exact repeat. Different entries that share
    guid and link (or, without a guid, the link) all stay, each key suffixed with its title and
    date: the same keys whatever their order, and through edits of their text."""
    holders: dict[str, list[int]] = {}
    for index, raw in enumerate(raws):
        if not _has_anything(raw):
            continue  # an empty <item/>: nothing to store
        link = _absolute(raw.base or feed_url, raw.link)
        guid_repeated = guid_uses[raw.guid] > 1 if raw.guid else False
        holders.setdefault(_key(raw, link, guid_repeated), []).append(index)
    keys: list[str | None] = [None] * len(raws)
    for key, indexes in holders.items():
        distinct = (
            {_digest(raws[i]): i for i in reversed(indexes)}.values() if len(indexes) > 1 else ()
        )
        if len(distinct) <= 1:  # one entry, perhaps repeated: the first copy stands
            keys[indexes[0]] = _bounded(key)
            continue
        taken: set[str] = set()
        for index in sorted(distinct):
            own = f"{key}#{_identity(raws[index])}"
            if own not in taken:  # same title and date: one post twice, edited; first stands
                taken.add(own)
                keys[index] = _bounded(own)
    return keys


def _indexable(url: str | None) -> str | None:
    """The canonical link, unless it is too long for the index that matches stories by it."""
    if url and len(url) > MAX_INDEXED_URL // 4 and len(url.encode()) > MAX_INDEXED_URL:
        return None
    return url


def _has_anything(raw: RawEntry) -> bool:
    return bool(
        raw.guid
        or raw.title.strip()
        or raw.link
        or raw.summary.strip()
        or raw.content.strip()
        or raw.enclosures
        or raw.authors
        or raw.categories
        or raw.published
        or raw.updated
        or raw.image
    )


def _entry(raw: RawEntry, key: str, feed_url: str, now: datetime) -> tuple[Entry, int]:
    """The Entry, and how many of its dates were dropped as implausible."""
    base = raw.base or feed_url
    link = safe_url(_absolute(base, raw.link))  # the key keeps whatever the feed gave
    # an explicit xml:base wins; else the article's own address; else the feed's
    html_base = raw.base if raw.base and raw.base != feed_url else (link or feed_url)
    title = html_to_text(raw.title) if raw.title_is_html else " ".join(raw.title.split())
    published = _plausible(raw.published, now)
    updated = _plausible(raw.updated, now)
    dropped = (raw.published is not None and published is None) + (
        raw.updated is not None and updated is None
    )
    entry = Entry(
        key=key,
        title=title[:MAX_TITLE],
        link=link,
        canonical_link=_indexable(canonical_url(link)),
        guid=raw.guid,
        summary=clean_html(raw.summary, html_base),
        content=clean_html(raw.content, html_base),
        authors=tuple(dict.fromkeys(a.strip() for a in raw.authors if a and a.strip())),
        categories=tuple(dict.fromkeys(c.strip() for c in raw.categories if c and c.strip())),
        enclosures=tuple(
            Enclosure(url, e.type, e.length)
            for e in raw.enclosures
            if (url := safe_url(_absolute(base, _one_line(e.url)))) is not None
        ),
        language=raw.language,
        image=safe_url(_absolute(html_base, _one_line(raw.image))),
        published=published or updated,
        updated=updated,
        duration=raw.duration if raw.duration is not None and 0 <= raw.duration < 2**31 else None,
        explicit=raw.explicit,
    )
    return entry, dropped


# What an image's address ends with, for Media RSS content that names neither medium nor type.
_IMAGE_ENDINGS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".svg", ".bmp")


def is_image(url: str, medium: str | None, mime: str | None) -> bool:
    """Whether a media object is a picture: its medium or type says so, or, where it says
    neither, its address ends like an image's. Media RSS makes "image" no default: a podcast's
    `<media:content url="...mp3" type="audio/mpeg">` is no picture for its item."""
    if medium:
        return medium.strip().lower() == "image"
    if mime:
        return mime.strip().lower().startswith("image/")
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    return path.endswith(_IMAGE_ENDINGS)


_BREAKS = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(url: str | None) -> str | None:
    """An address as one line: line breaks and other controls (`&#10;` in a feed survives XML
    parsing) dropped, inner spaces encoded, so no address can add a line to a plain-text digest."""
    if url is None:
        return None
    return _BREAKS.sub("", url).strip().replace(" ", "%20")
