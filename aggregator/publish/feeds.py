"""Atom 1.0 and RSS 2.0 documents written by feedgen (the only module that imports it).

Every value comes from the view, never from the clock: feedgen would otherwise stamp `updated`
and `lastBuildDate` with the build time, and the same items must give the same bytes (and so the
same ETag) across re-renders and restarts. RSS carries the paging and hub links as `atom:link`,
which feedgen only writes for rel=self, through a small extension.

No single entry may fail a document: each is rendered on its own first, and one that cannot be
(whatever the reason) is left out with a warning naming it, while the rest are served.

What readers and the W3C Feed Validator expect, beyond the schemas:
- an Atom entry's own links come first, before its `<source>` (simple readers such as sfeed take
  the first link they meet), and `<source>` has an id, a title and an updated date;
- RSS `<description>` is HTML to every reader, so the plain-text summary is escaped first;
- RSS plain text writes `&` and `<` as hexadecimal character references (RSS Best Practices
  Profile), so a title such as "Using <canvas>" is not mistaken for markup.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from aggregator import __version__
from aggregator.feed.sanitize import escape
from aggregator.publish.catalog import MEDIA_TYPES
from aggregator.publish.view import (
    EntryView,
    FeedView,
    feed_id,
    left_out,
    source_feed_id,
    writable,
    xml_text,
)

ATOM_NS = "http://www.w3.org/2005/Atom"
GENERATOR_URI = "https://github.com/aggregator/aggregator"


class _AtomLinks(BaseExtension):  # type: ignore[misc]
    """RSS channel `atom:link`s besides rel=self (hub, next, previous, first)."""

    def __init__(self) -> None:
        self.links: list[tuple[str, str]] = []

    def extend_ns(self) -> dict[str, str]:
        return {"atom": ATOM_NS}

    def extend_rss(self, feed: Any) -> Any:
        channel = feed[0]
        for rel, href in self.links:
            etree.SubElement(channel, f"{{{ATOM_NS}}}link", rel=rel, href=href)
        return feed


class _AtomEntry(BaseExtension):  # type: ignore[misc]
    """What feedgen 1.0 gets wrong in an Atom entry: it drops the `rel` of entry links (an
    enclosure would become a second alternate link), writes links after `<source>`, and gives
    `<source>` neither id nor updated date. Feedgen's Atom elements carry no namespace of their
    own (the document's default namespace applies), so neither do these."""

    def __init__(self) -> None:
        self.links: list[dict[str, str]] = []
        self.source: tuple[str, str, str, str] | None = None  # id, title, updated, feed URL

    def extend_atom(self, entry: Any) -> Any:
        after = entry.find("updated")
        position = entry.index(after) + 1 if after is not None else len(entry)
        for offset, attributes in enumerate(self.links):
            entry.insert(position + offset, etree.Element("link", attributes))
        if self.source is not None:
            source = etree.SubElement(entry, "source")
            identifier, title, updated, url = self.source
            etree.SubElement(source, "id").text = identifier
            etree.SubElement(source, "title").text = title
            etree.SubElement(source, "updated").text = updated
            if url:
                etree.SubElement(source, "link", rel="self", href=url)
        return entry


def _paging(view: FeedView, fmt: str) -> list[tuple[str, str]]:
    """RFC 5005 paged-feed links; `prev` too, the name HTML and most clients know."""
    links = []
    if view.before is not None:
        links.append(("first", view.links.feed(fmt)))
    if view.previous is not None:
        previous = view.links.feed(fmt, view.previous or None)
        links += [("previous", previous), ("prev", previous)]
    if view.next is not None:
        links.append(("next", view.links.feed(fmt, view.next)))
    return links


def _channel(view: FeedView, fmt: str, updated: datetime) -> FeedGenerator:
    """The document without its entries."""
    fg = FeedGenerator()
    publication = view.publication
    fg.id(feed_id(publication.key))
    fg.title(xml_text(publication.title))
    fg.description(xml_text(publication.description or publication.title))
    fg.author(name=view.site_title)
    fg.link(href=view.links.feed(fmt, view.before), rel="self", type=MEDIA_TYPES[fmt])
    fg.updated(updated)
    fg.generator("aggregator", __version__, GENERATOR_URI)
    if any(entry.image for entry in view.entries):
        fg.load_extension("media")  # the namespace, once, on the document
    if fmt == "rss" and any(_podcast(entry) for entry in view.entries):
        fg.load_extension("podcast", atom=False, rss=True)
    extra = _paging(view, fmt)
    if view.hub:
        extra.insert(0, ("hub", view.hub))
    if fmt == "atom":
        for rel, href in extra:
            fg.link(href=href, rel=rel)
    else:
        fg.register_extension("aggregator_links", _AtomLinks, None, atom=False, rss=True)
        fg.aggregator_links.links = extra
    # last: feedgen makes the last link RSS's channel <link>, which should be the web page
    fg.link(href=view.links.page, rel="alternate", type="text/html")
    return fg


def _links(entry: EntryView) -> list[dict[str, str]]:
    """The entry's own links, its page first."""
    links = []
    if entry.link:
        links.append({"rel": "alternate", "type": "text/html", "href": entry.link})
    for enclosure in entry.enclosures:
        links.append(
            {
                "rel": "enclosure",
                "type": enclosure.type or "application/octet-stream",
                "length": str(enclosure.length or 0),
                "href": enclosure.url,
            }
        )
    return links


def _common(entry: EntryView) -> FeedEntry:
    fe = FeedEntry()
    fe.id(entry.id)
    fe.title(entry.title)
    fe.updated(entry.updated)
    fe.published(entry.published)
    fe.content(entry.content_html, type="html")
    for category in entry.categories:
        fe.category(term=category.term, label=category.label, scheme=category.scheme)
    if entry.image:  # Media RSS, which feed readers and podcast apps show as the picture
        fe.load_extension("media")
        fe.media.thumbnail(url=entry.image, group=None)
    return fe


def _atom_entry(entry: EntryView) -> FeedEntry:
    fe = _common(entry)
    if entry.summary_text:
        fe.summary(entry.summary_text)  # type="text": plain text, as it is
    fe.register_extension("aggregator_entry", _AtomEntry, atom=True, rss=False)
    fe.aggregator_entry.links = _links(entry)
    if entry.source_url or entry.source_title:
        fe.aggregator_entry.source = (
            source_feed_id(entry.source_id),
            entry.source_title,
            entry.updated.isoformat(),
            entry.source_url,
        )
    for name in entry.authors:
        fe.author(name=name)
    return fe


def _rss_item(entry: EntryView) -> FeedEntry:
    fe = _common(entry)
    if entry.summary_text:
        fe.summary(escape(entry.summary_text))  # <description> is HTML to every reader
    links = _links(entry)
    for kind in ("enclosure", "alternate"):  # RSS has one link and one enclosure: the first
        first = next((link for link in links if link["rel"] == kind), None)
        if first is not None:
            fe.link(**first)
    if entry.source_url:
        fe.source(url=entry.source_url, title=entry.source_title)
    if entry.authors:
        fe.load_extension("dc", atom=False, rss=True)
        fe.dc.dc_creator(list(entry.authors))
    if _podcast(entry):  # the tags podcast apps read, where the source gave them
        fe.load_extension("podcast", atom=False, rss=True)
        if entry.duration is not None:
            fe.podcast.itunes_duration(_clock(entry.duration))
        if entry.explicit is not None:
            fe.podcast.itunes_explicit("yes" if entry.explicit else "clean")
        if entry.image and entry.image.endswith((".jpg", ".png")):
            fe.podcast.itunes_image(entry.image)  # iTunes takes JPEG and PNG (feedgen: so named)
    return fe


def _podcast(entry: EntryView) -> bool:
    """An episode: an item with sound or video that has iTunes tags of its own."""
    playable = any(media.kind in ("audio", "video") for media in entry.media)
    return playable and (entry.duration is not None or entry.explicit is not None)


def _clock(seconds: int) -> str:
    """itunes:duration as HH:MM:SS."""
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def _document(view: FeedView, fmt: str) -> FeedGenerator:
    view = writable(view)
    make: Callable[[EntryView], FeedEntry] = _atom_entry if fmt == "atom" else _rss_item
    kept: list[tuple[EntryView, FeedEntry]] = []
    for entry in view.entries:
        try:
            fe = make(entry)
            if fmt == "atom":  # rendered once alone: a failure shows here, not in the document
                fe.atom_entry()
            else:
                fe.rss_entry()
        except Exception as exc:  # any failure of one entry: the document goes on without it
            left_out(f"{view.publication.key}.{fmt}", entry, exc)
            continue
        kept.append((entry, fe))
    fg = _channel(view, fmt, max((entry.updated for entry, _ in kept), default=view.since))
    for _, fe in kept:
        fg.add_entry(fe, order="append")
    return fg


_TEXT_ELEMENT = re.compile(rb"<([\w:]+)((?:\s[^>]*)?)>([^<]*)</\1>")
_HTML_ELEMENTS = (b"description", b"content:encoded")


def _references(match: re.Match[bytes]) -> bytes:
    name, attributes, text = match.groups()
    if name in _HTML_ELEMENTS:
        return match.group(0)
    text = text.replace(b"&amp;", b"&#x26;").replace(b"&lt;", b"&#x3C;")
    return b"<%s%s>%s</%s>" % (name, attributes, text, name)


def atom(view: FeedView) -> bytes:
    return bytes(_document(view, "atom").atom_str(pretty=True, encoding="UTF-8"))


def rss(view: FeedView) -> bytes:
    """Plain-text elements (all but description and content:encoded, which are HTML) carry `&`
    and `<` as character references: the same text to an XML parser, and no longer taken for
    markup by the RSS Profile's rule."""
    body = bytes(_document(view, "rss").rss_str(pretty=True, encoding="UTF-8"))
    return _TEXT_ELEMENT.sub(_references, body)
