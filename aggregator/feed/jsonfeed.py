"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1) read into RawEntry, by hand.

feedparser does not read JSON Feed, and the format is small: a version URL, feed metadata and a
list of items. Anything malformed is skipped item by item; only a document with no readable
version or items raises ParseError. Real feeds write the version loosely (`http://`, a bare
`1.1`), and both are read. Hostile values are bounded: integers of any length never reach `int`
(ids stay text), nesting past Python's recursion limit is a ParseError, and a date out of range
is dropped with a note.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aggregator.exceptions import ParseError
from aggregator.feed.normalise import RawEntry
from aggregator.feed.sanitize import escape
from aggregator.types import Enclosure

_VERSION = re.compile(r"(?:https?://(?:www\.)?jsonfeed\.org/version/)?1(?:\.\d{1,3})?/?", re.I)
_LONGEST_INT = 18  # digits: longer integers stay text (a 5,000-digit id must not reach int())
MAX_DEPTH = 32  # a JSON Feed needs 4 levels; deeper values (extensions) are replaced by null
# A string always matches (possessively, its closing quote optional), so no quote makes the scan
# look ahead and back off: one pass, however hostile the text.
_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]')


@dataclass(frozen=True)
class JsonFeed:
    title: str
    home_page_url: str | None
    language: str | None
    entries: tuple[RawEntry, ...]
    notes: tuple[str, ...] = ()


def looks_like_json(body: bytes, content_type: str | None) -> bool:
    """JSON by its declared type, or by its first character when the type says nothing useful."""
    if content_type and "json" in content_type.lower():
        return True
    return body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _url(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _date(value: Any, name: str, problems: list[str]) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # unreadable, or out of range once in UTC (year 1)
        problems.append(f"unreadable {name} {value.strip()[:40]!r} ignored")
        return None


def _shallow(text: str) -> str:
    """The JSON text with every value nested deeper than MAX_DEPTH replaced by null, so the rest
    of the document (the other items) can still be read. Strings are skipped whole."""
    out: list[str] = []
    depth, kept_to, cut_from = 0, 0, -1
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth == MAX_DEPTH + 1:
                cut_from = match.start()
        elif token in "]}":
            depth -= 1
            if depth == MAX_DEPTH and cut_from >= 0:
                out += [text[kept_to:cut_from], "null"]
                kept_to, cut_from = match.end(), -1
    return "".join([*out, text[kept_to:]]) if out else text


def _int(digits: str) -> int | str:
    return int(digits) if len(digits.lstrip("-")) <= _LONGEST_INT else digits


def _authors(item: dict[str, Any], feed: dict[str, Any]) -> tuple[str, ...]:
    people = item.get("authors") or (
        [item["author"]] if isinstance(item.get("author"), dict) else []
    )
    if not people:
        people = feed.get("authors") or (
            [feed["author"]] if isinstance(feed.get("author"), dict) else []
        )
    return tuple(
        _text(p.get("name")) for p in people if isinstance(p, dict) and _text(p.get("name"))
    )


def _attachments(item: dict[str, Any]) -> tuple[Enclosure, ...]:
    out = []
    for attachment in item.get("attachments") or ():
        if not isinstance(attachment, dict) or not _url(attachment.get("url")):
            continue
        size = attachment.get("size_in_bytes")
        out.append(
            Enclosure(
                str(_url(attachment["url"])),
                _text(attachment.get("mime_type")),
                size if isinstance(size, int) and size >= 0 else None,
            )
        )
    return tuple(out)


def _entry(item: dict[str, Any], feed: dict[str, Any]) -> RawEntry:
    item_id = item.get("id")
    guid = str(item_id).strip() if isinstance(item_id, str | int) and str(item_id).strip() else None
    content = _text(item.get("content_html")) or escape(_text(item.get("content_text")))
    tags: list[Any] = item["tags"] if isinstance(item.get("tags"), list) else []
    problems: list[str] = []
    published = _date(item.get("date_published"), "date_published", problems)
    updated = _date(item.get("date_modified"), "date_modified", problems)
    return RawEntry(
        guid=guid,
        title=_text(item.get("title")),
        title_is_html=False,
        link=_url(item.get("url")) or _url(item.get("external_url")),
        summary=escape(_text(item.get("summary"))),  # plain text in JSON Feed
        content=content,
        authors=_authors(item, feed),
        categories=tuple(t.strip() for t in tags if isinstance(t, str)),
        enclosures=_attachments(item),
        language=_text(item.get("language")) or _text(feed.get("language")) or None,
        image=_url(item.get("image")) or _url(item.get("banner_image")),
        published=published,
        updated=updated,
        problems=tuple(problems),
    )


def parse(body: bytes, url: str) -> JsonFeed:
    """Read a JSON Feed document; raise ParseError when it is not one."""
    notes: list[str] = []
    try:
        text = body.decode("utf-8-sig")
        try:
            document = json.loads(text, parse_int=_int)
        except RecursionError:
            document = json.loads(_shallow(text), parse_int=_int)
            notes.append(f"values nested more than {MAX_DEPTH} levels deep were ignored")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"not a readable feed: invalid JSON: {exc}") from None
    except RecursionError:
        raise ParseError("not a readable feed: the JSON is nested too deeply") from None
    version = document.get("version") if isinstance(document, dict) else None
    if not isinstance(version, str | int | float) or not _VERSION.fullmatch(str(version).strip()):
        raise ParseError(
            "not a readable feed: JSON without a JSON Feed version "
            "(https://jsonfeed.org/version/1.1)"
        )
    items = document.get("items")
    if not isinstance(items, list):
        raise ParseError("not a readable feed: the JSON Feed has no items list")
    entries = tuple(_entry(item, document) for item in items if isinstance(item, dict))
    return JsonFeed(
        title=_text(document.get("title")),
        home_page_url=_url(document.get("home_page_url")),
        language=_text(document.get("language")) or None,
        entries=entries,
        notes=tuple(notes),
    )
