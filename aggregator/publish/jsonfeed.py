"""JSON Feed 1.1 (https://jsonfeed.org/version/1.1), written by hand: feedgen has no JSON Feed.

The format is a small dictionary; what the spec leaves to extensions (an item's source, section
and the other outlets that carried the story) goes under `_aggregator`, as extensions must start
with an underscore. Key order is fixed, so the same view always gives the same bytes.

As in the XML writers, no single item may fail the document: one that cannot be written is left
out with a warning naming it. Text is stripped of what XML cannot carry too (a lone surrogate
would make the UTF-8 body itself unwritable). `summary` is plain text by the spec; `content_html`
is the sanitised HTML (or the escaped title) of the view.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aggregator.publish.view import EntryView, FeedView, left_out, media_of, writable, xml_text

VERSION = "https://jsonfeed.org/version/1.1"


def _date(moment: datetime) -> str:
    """RFC 3339, which has no dates without an offset."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no time zone")
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _item(entry: EntryView) -> dict[str, Any]:
    item: dict[str, Any] = {"id": entry.id}
    if entry.link:
        item["url"] = entry.link
    item["title"] = entry.title
    item["content_html"] = entry.content_html
    if entry.summary_text:
        item["summary"] = entry.summary_text
    if entry.image:
        item["image"] = entry.image
    item["date_published"] = _date(entry.published)
    item["date_modified"] = _date(entry.updated)
    if entry.authors:
        item["authors"] = [{"name": name} for name in entry.authors]
    if entry.categories:
        item["tags"] = [category.label for category in entry.categories]
    if entry.language:
        item["language"] = entry.language
    if entry.enclosures:
        # the episode's length belongs to its first sound or video file, not to every file
        playable = (e for e in entry.enclosures if media_of(e).kind in ("audio", "video"))
        episode = next(playable, None) if entry.duration is not None else None
        item["attachments"] = [
            {
                "url": e.url,
                "mime_type": e.type or "application/octet-stream",
                **({"size_in_bytes": e.length} if e.length else {}),
                **({"duration_in_seconds": entry.duration} if e is episode else {}),
            }
            for e in entry.enclosures
        ]
    item["_aggregator"] = {
        "source": {"id": entry.source_id, "title": entry.source_title},
        "categories": [
            {"term": c.term, "label": c.label, "scheme": c.scheme} for c in entry.categories
        ],
        "also_reported_by": [
            {"source": a.source, "title": a.title, **({"url": a.link} if a.link else {})}
            for a in entry.also
        ],
    }
    return item


def _items(view: FeedView) -> list[dict[str, Any]]:
    items = []
    for entry in view.entries:
        try:
            item = _item(entry)
            json.dumps(item, ensure_ascii=False).encode("utf-8")  # a failure shows here, alone
        except Exception as exc:  # any failure of one item: the document goes on without it
            left_out(f"{view.publication.key}.json", entry, exc)
            continue
        items.append(item)
    return items


def render(view: FeedView) -> bytes:
    view = writable(view)
    publication = view.publication
    feed: dict[str, Any] = {
        "version": VERSION,
        "title": xml_text(publication.title),
        "home_page_url": view.links.page,
        "feed_url": view.links.feed("json", view.before),
    }
    if publication.description:
        feed["description"] = xml_text(publication.description)
    if view.next is not None:
        feed["next_url"] = view.links.feed("json", view.next)
    feed["authors"] = [{"name": view.site_title}]
    if view.hub:
        feed["hubs"] = [{"type": "WebSub", "url": view.hub}]
    feed["items"] = _items(view)
    return json.dumps(feed, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
