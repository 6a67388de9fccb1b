"""From what a format adapter read (RawEntry) to the one Entry every later stage sees.

Adapters (feedparser for RSS/Atom, ours for JSON Feed) only pull fields out; everything that makes
entries comparable happens here, once: stable keys, absolute and canonical links, sanitised HTML,
plain-text titles, aware UTC dates (a missing or future date stays None: the item then dates
from when it was first seen, see `Item.published`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urljoin

from aggregator.sanitize import clean_html, html_to_text, safe_url
from aggregator.types import Enclosure, Entry
from aggregator.urls import canonical_url

FUTURE_TOLERANCE = timedelta(hours=1)


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


def _absolute(base: str, url: str | None) -> str | None:
    if not url or not url.strip():
        return None
    return urljoin(base, url.strip()) if base else url.strip()


def _key(raw: RawEntry, link: str | None, repeated: bool) -> str:
    """guid, else link, else a digest of title and content; a guid the document repeats for
    different entries is made unique with the entry's link or digest."""
    digest = (
        "sha256:"
        + hashlib.sha256(f"{raw.title}\0{raw.content or raw.summary}".encode()).hexdigest()[:32]
    )
    if raw.guid:
        return f"{raw.guid}#{link or digest}" if repeated else raw.guid
    return link or digest


def _plausible(moment: datetime | None, now: datetime) -> datetime | None:
    """A date in the future is a publisher's mistake: treat it as missing (the item then dates
    from when it was first seen), so it neither tops every list nor changes on every poll."""
    if moment is None or moment > now + FUTURE_TOLERANCE:
        return None
    return moment


def normalise(raws: Sequence[RawEntry], feed_url: str, now: datetime) -> tuple[Entry, ...]:
    """Entries in document order, one per distinct key (an exact repeat is dropped)."""
    guid_uses = Counter(raw.guid for raw in raws if raw.guid)
    entries: list[Entry] = []
    seen: set[str] = set()
    for raw in raws:
        if not (
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
        ):
            continue  # an empty <item/>: nothing to store
        base = raw.base or feed_url
        link = _absolute(base, raw.link)
        guid_repeated = guid_uses[raw.guid] > 1 if raw.guid else False
        key = _key(raw, link, guid_repeated)
        if key in seen:
            continue
        seen.add(key)
        # an explicit xml:base wins; else the article's own address; else the feed's
        link = safe_url(link)  # the key above keeps whatever the feed gave
        html_base = raw.base if raw.base and raw.base != feed_url else (link or feed_url)
        title = html_to_text(raw.title) if raw.title_is_html else " ".join(raw.title.split())
        published = _plausible(raw.published, now)
        updated = _plausible(raw.updated, now)
        entries.append(
            Entry(
                key=key,
                title=title,
                link=link,
                canonical_link=canonical_url(link),
                guid=raw.guid,
                summary=clean_html(raw.summary, html_base),
                content=clean_html(raw.content, html_base),
                authors=tuple(dict.fromkeys(a.strip() for a in raw.authors if a and a.strip())),
                categories=tuple(
                    dict.fromkeys(c.strip() for c in raw.categories if c and c.strip())
                ),
                enclosures=tuple(
                    Enclosure(url, e.type, e.length)
                    for e in raw.enclosures
                    if (url := safe_url(_absolute(base, e.url))) is not None
                ),
                language=raw.language,
                image=safe_url(_absolute(html_base, raw.image)),
                published=published or updated,
                updated=updated,
            )
        )
    return tuple(entries)
