"""Feed documents to entries: the only module that sees feedparser's dictionaries.

RSS 2.0 and Atom 1.0 in their common shape are read by the fast path (`fastparse`, lxml), which
gives what feedparser would; everything else (malformed XML, other encodings, RSS 1.0, Media RSS,
iTunes, ...) goes through feedparser, with its own HTML sanitiser and its resolution of relative
URLs inside HTML off: nh3 does both, at a fraction of the cost, in `normalise`, using the
base feedparser works out (xml:base, else the document's URL). JSON Feed goes through our adapter
(`jsonfeed`), since feedparser does not read it. A malformed document that still yields entries
is accepted with a warning (feedparser's "bozo"); one that yields nothing raises ParseError.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aggregator.exceptions import ParseError
from aggregator.feed import jsonfeed
from aggregator.feed.normalise import MAX_LANGUAGE, RawEntry, is_image, normalise, xml_text
from aggregator.feed.sanitize import escape
from aggregator.types import Enclosure, Entry


@dataclass(frozen=True)
class ParsedFeed:
    """A document's entries and what it says about itself."""

    format: str
    title: str
    link: str | None
    language: str | None
    ttl: timedelta | None
    entries: tuple[Entry, ...]
    warning: str | None = None


def parse_document(
    body: bytes, url: str, now: datetime, content_type: str | None = None, *, fast: bool = True
) -> ParsedFeed:
    """Parse a fetched body; `url` is where it came from (the base of relative links).
    `fast=False` sends XML to feedparser even where the fast path would read it (the
    differential test compares the two)."""
    if not body.strip():
        raise ParseError("empty document: the server answered with no content")
    notes: list[str] = []
    if jsonfeed.looks_like_json(body, content_type):
        document = jsonfeed.parse(body, url)
        notes += document.notes
        entries = normalise(document.entries, url, now, notes)
        return ParsedFeed(
            "json",
            xml_text(document.title),
            document.home_page_url,
            document.language,
            None,
            entries,
            _warning(None, notes),
        )
    read = None
    if fast:
        from aggregator.feed import fastparse  # lxml, when there is a document to read

        read = fastparse.read(body, url, content_type)
    if read is not None:
        return ParsedFeed(
            format=read.format,
            title=xml_text(read.title),
            link=read.link or None,
            language=_language(read.language),
            ttl=_ttl(read.ttl),
            entries=normalise(read.entries, url, now, notes),
            warning=_warning(None, notes),
        )
    return _feedparser(body, url, now, content_type, notes)


def _language(value: Any) -> str | None:
    language = str(value or "").strip()
    return language if 0 < len(language) <= MAX_LANGUAGE else None


def _feedparser(
    body: bytes, url: str, now: datetime, content_type: str | None, notes: list[str]
) -> ParsedFeed:
    import feedparser

    # Without a declared type feedparser would guess a Latin-1 text type; XML's own rules (the
    # encoding declaration, else UTF-8) are right for a document whose server said nothing.
    headers = {"content-location": url, "content-type": content_type or "application/xml"}
    result = feedparser.parse(
        body, response_headers=headers, resolve_relative_uris=False, sanitize_html=False
    )
    raws = [_raw(entry, result.feed) for entry in result.entries]
    if b"podcast-1.0.dtd" in body and any(raw.explicit is None for raw in raws):
        raws = _with_explicit(body, raws)
    problem = result.get("bozo_exception")
    benign = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
    if isinstance(problem, benign):  # a wrong or missing Content-Type: the body decides
        problem = None
    if not raws and (problem or not result.version):
        reason = _reason(problem) if problem else "no RSS, Atom or JSON Feed document found"
        raise ParseError(f"not a readable feed: {reason}")
    feed: Any = result.feed
    entries = normalise(raws, url, now, notes)
    return ParsedFeed(
        format=result.version or "unknown",
        title=xml_text(_text(feed, "title")),
        link=feed.get("link") or None,
        language=_language(feed.get("language")),
        ttl=_ttl(feed.get("ttl")),
        entries=entries,
        warning=_warning(problem, notes),
    )


def _warning(problem: BaseException | None, notes: list[str]) -> str | None:
    """One line for the source: the parser's complaint, then what normalising had to drop."""
    parts = [f"malformed feed, read anyway: {_reason(problem)}"] if problem else []
    distinct = list(dict.fromkeys(notes))
    parts += distinct[:3]
    if len(distinct) > 3:
        parts.append(f"and {len(distinct) - 3} more")
    return "; ".join(parts) or None


_SAX_POSITION = re.compile(r"^<unknown>:(\d+):(\d+): ")


def _reason(problem: BaseException | None) -> str:
    """feedparser's parser message, with its position written for people."""
    text = str(problem or "").strip() or type(problem).__name__
    return _SAX_POSITION.sub(lambda m: f"line {m[1]}, column {int(m[2]) + 1}: ", text)


def _text(node: Any, name: str) -> str:
    value = node.get(name)
    return str(value).strip() if value else ""


def _ttl(value: Any) -> timedelta | None:
    try:
        minutes = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return timedelta(minutes=minutes) if 0 < minutes <= 7 * 24 * 60 else None


def _date(value: time.struct_time | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC)
    except (OverflowError, ValueError, OSError):
        return datetime.min.replace(tzinfo=UTC)  # out of range: normalise drops it, and says so


def _length(value: Any) -> int | None:
    try:
        length = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return length if length >= 0 else None


def _image(entry: Any) -> str | None:
    for key in ("media_thumbnail", "media_content"):
        for media in entry.get(key) or ():
            url = media.get("url")
            if url and (
                key == "media_thumbnail"
                or is_image(str(url), media.get("medium"), media.get("type"))
            ):
                return str(url)
    image = entry.get("image")
    if isinstance(image, Mapping) and image.get("href"):
        return str(image["href"])
    for link in entry.get("links") or ():
        if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/"):
            return str(link.get("href"))
    return None


def _raw(entry: Any, feed: Any) -> RawEntry:
    detail = entry.get("title_detail") or {}
    contents = [c for c in entry.get("content") or () if c.get("value")]
    html_content = next((c for c in contents if "html" in str(c.get("type", ""))), None)
    content = html_content or (contents[0] if contents else None)
    content_value = str(content["value"]) if content else ""
    summary = str(entry.get("summary") or "")
    if summary and summary == content_value:
        summary = ""  # feedparser copies content into a missing summary
    if content and "html" not in str(content.get("type", "html")):
        content_value = escape(content_value)
    if entry.get("summary_detail") and "html" not in str(entry.summary_detail.get("type", "html")):
        summary = escape(summary)
    authors = [str(a.get("name") or a.get("email") or "") for a in entry.get("authors") or ()]
    if not any(authors) and entry.get("author"):
        authors = [str(entry.get("author"))]
    enclosures = [
        Enclosure(str(link.get("href")), str(link.get("type") or ""), _length(link.get("length")))
        for link in entry.get("links") or ()
        if link.get("rel") == "enclosure" and link.get("href")
    ]
    return RawEntry(
        guid=str(entry.get("id")).strip() or None if entry.get("id") else None,
        title=str(entry.get("title") or ""),
        title_is_html="html" in str(detail.get("type", "text/html")),
        link=str(entry.get("link")) if entry.get("link") else None,
        summary=summary,
        content=content_value,
        base=(content or {}).get("base") or detail.get("base") or None,
        authors=tuple(authors),
        categories=tuple(
            str(t.get("term") or t.get("label") or "") for t in entry.get("tags") or ()
        ),
        enclosures=tuple(enclosures),
        language=(detail.get("language") or feed.get("language") or None),
        image=_image(entry),
        published=_date(entry.get("published_parsed")),
        # dict.get: feedparser's own .get maps a missing updated date to the published one
        updated=_date(dict.get(entry, "updated_parsed")),
        problems=tuple(_unreadable_dates(entry)),
        duration=_duration(entry.get("itunes_duration")),
        explicit=entry.get("itunes_explicit")
        if entry.get("itunes_explicit") in (True, False)
        else None,
    )


def _with_explicit(body: bytes, raws: list[RawEntry]) -> list[RawEntry]:
    """The items' `itunes:explicit` as Apple writes it now ("true"/"false"), which feedparser
    reads as no answer; matched by document order, and only where the items line up."""
    from dataclasses import replace

    from aggregator.feed import fastparse

    flags = fastparse.explicit_flags(body)
    if flags is None or len(flags) != len(raws):
        return raws
    return [
        replace(raw, explicit=flag) if raw.explicit is None and flag is not None else raw
        for raw, flag in zip(raws, flags, strict=True)
    ]


def _explicit(value: Any) -> bool | None:
    """feedparser's reading of itunes:explicit: True ("yes"), False ("clean"), else None (then
    read again by `_with_explicit`)."""
    return value if isinstance(value, bool) else None


def _duration(value: Any) -> int | None:
    """itunes:duration as podcasts write it: seconds ("1830"), "MM:SS" or "HH:MM:SS"."""
    parts = str(value or "").strip().split(":")
    if not 1 <= len(parts) <= 3 or not all(
        p.isascii() and p.isdecimal() and len(p) <= 9
        for p in parts  # ASCII digits only: not "²"
    ):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds


def _unreadable_dates(entry: Any) -> list[str]:
    """A date the feed gave that could not be read: said, so nobody wonders why an old post
    shows up dated today."""
    out = []
    for name in ("published", "updated"):
        written = dict.get(entry, name)
        if written and not dict.get(entry, f"{name}_parsed"):
            out.append(f"unreadable {name} date {str(written)[:40]!r} ignored")
    return out


def parse_page(
    body: bytes, url: str, now: datetime, rules: Any, content_type: str | None = None
) -> ParsedFeed:
    """A page source's page (`rules`: its `page:` selectors) to entries, as a feed's would be:
    keyed by their links, summaries cleaned like any feed HTML. Raises ParseError when the
    selectors find nothing, so a redesigned page shows on the status page, not as silence."""
    from aggregator.feed import webpage  # lxml.html and cssselect, for page sources only

    page = webpage.articles(body, url, rules, now, content_type)
    if not page.articles:
        raise ParseError(
            f"the page's selectors found no article: `items: {rules.items}` matched "
            + ("nothing" if not page.notes else "; ".join(page.notes))
            + " (has the page changed? `aggregator poll --source ID --dry-run` shows what "
            "the selectors find)"
        )
    language = _language(page.language)
    raws = [
        RawEntry(
            guid=None,
            title=a.title,
            link=a.link,
            summary=a.summary_html,
            title_is_html=False,
            language=language,
            published=a.published,
        )
        for a in page.articles
    ]
    notes = list(page.notes)
    return ParsedFeed(
        format="html",
        title=page.title,
        link=url,
        language=language,
        ttl=None,
        entries=normalise(raws, url, now, notes),
        warning=_warning(None, notes),
    )
