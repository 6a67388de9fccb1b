"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1) read into RawEntry, by hand.

feedparser does not read JSON Feed, and the format is small: a version URL, feed metadata and a
list of items. Anything malformed is skipped item by item; only a document with no readable
version or items raises ParseError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aggregator.exceptions import ParseError
from aggregator.normalise import RawEntry
from aggregator.sanitize import escape
from aggregator.types import Enclosure

_VERSION_PREFIX = "https://jsonfeed.org/version/1"


@dataclass(frozen=True)
class JsonFeed:
    title: str
    home_page_url: str | None
    language: str | None
    entries: tuple[RawEntry, ...]


def looks_like_json(body: bytes, content_type: str | None) -> bool:
    """JSON by its declared type, or by its first character when the type says nothing useful."""
    if content_type and "json" in content_type.lower():
        return True
    return body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _url(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _date(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


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
    return RawEntry(
        guid=guid,
        title=_text(item.get("title")),
        title_is_html=False,
        link=_url(item.get("url")) or _url(item.get("external_url")),
        summary=_text(item.get("summary")),
        content=content,
        authors=_authors(item, feed),
        categories=tuple(t.strip() for t in tags if isinstance(t, str)),
        enclosures=_attachments(item),
        language=_text(item.get("language")) or _text(feed.get("language")) or None,
        image=_url(item.get("image")) or _url(item.get("banner_image")),
        published=_date(item.get("date_published")),
        updated=_date(item.get("date_modified")),
    )


def parse(body: bytes, url: str) -> JsonFeed:
    """Read a JSON Feed document; raise ParseError when it is not one."""
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"not a readable feed: invalid JSON: {exc}") from None
    if not isinstance(document, dict) or not str(document.get("version", "")).startswith(
        _VERSION_PREFIX
    ):
        raise ParseError(
            f"not a readable feed: JSON without a JSON Feed version ({_VERSION_PREFIX}.x)"
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
    )
