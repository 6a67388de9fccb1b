"""Atom 1.0 and RSS 2.0 documents written by feedgen (the only module that imports it).

Every value comes from the view, never from the clock: feedgen would otherwise stamp `updated`
and `lastBuildDate` with the build time, and the same items must give the same bytes (and so the
same ETag) across re-renders and restarts. RSS carries the paging and hub links as `atom:link`,
which feedgen only writes for rel=self, through a small extension.
"""

from __future__ import annotations

from typing import Any

from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from aggregator import __version__
from aggregator.publish.catalog import MEDIA_TYPES
from aggregator.publish.view import EPOCH, FeedView, feed_id

ATOM_NS = "http://www.w3.org/2005/Atom"
GENERATOR_URI = "https://github.com/aggregator/aggregator"


class _AtomLinks(BaseExtension):  # type: ignore[misc]
    """RSS channel `atom:link`s besides rel=self (hub, next, previous, first), and Atom entry
    links: feedgen 1.0 drops the `rel` of entry links, which turns an enclosure into a second
    alternate link."""

    def __init__(self) -> None:
        self.links: list[tuple[str, str]] = []

    def extend_ns(self) -> dict[str, str]:
        return {"atom": ATOM_NS}

    def extend_rss(self, feed: Any) -> Any:
        channel = feed[0]
        for rel, href in self.links:
            etree.SubElement(channel, f"{{{ATOM_NS}}}link", rel=rel, href=href)
        return feed


class _EntryLinks(BaseExtension):  # type: ignore[misc]
    def __init__(self) -> None:
        self.links: list[dict[str, str]] = []

    def extend_atom(self, entry: Any) -> Any:
        for attributes in self.links:  # feedgen's Atom elements carry no namespace of their own
            etree.SubElement(entry, "link", attributes)
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


def _generator(view: FeedView, fmt: str) -> FeedGenerator:
    fg = FeedGenerator()
    publication = view.publication
    fg.id(feed_id(publication.key))
    fg.title(publication.title)
    fg.description(publication.description or publication.title)
    fg.author(name=view.site_title)
    fg.link(href=view.links.feed(fmt, view.before), rel="self", type=MEDIA_TYPES[fmt])
    fg.updated(view.updated or EPOCH)
    fg.generator("aggregator", __version__, GENERATOR_URI)
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
    for entry in view.entries:
        fe: FeedEntry = fg.add_entry(order="append")
        fe.id(entry.id)
        fe.title(entry.title)
        fe.updated(entry.updated)
        fe.published(entry.published)
        links = []
        if entry.link:
            links.append({"rel": "alternate", "type": "text/html", "href": entry.link})
        fe.content(entry.content_html, type="html")
        if entry.summary_text:
            fe.summary(entry.summary_text)
        for category in entry.categories:
            fe.category(term=category.term, label=category.label, scheme=category.scheme)
        for enclosure in entry.enclosures:
            links.append(
                {
                    "rel": "enclosure",
                    "type": enclosure.type or "application/octet-stream",
                    "length": str(enclosure.length or 0),
                    "href": enclosure.url,
                }
            )
        if fmt == "atom":
            fe.register_extension("aggregator_links", _EntryLinks, atom=True, rss=False)
            fe.aggregator_links.links = links
        else:  # RSS has one link and one enclosure: the first of each
            for kind in ("enclosure", "alternate"):
                first = next((link for link in links if link["rel"] == kind), None)
                if first is not None:
                    fe.link(**first)
        if entry.source_url:
            fe.source(url=entry.source_url, title=entry.source_title)
        if fmt == "atom":
            for name in entry.authors:
                fe.author(name=name)
        elif entry.authors:
            fe.load_extension("dc", atom=False, rss=True)
            fe.dc.dc_creator(list(entry.authors))
    return fg


def atom(view: FeedView) -> bytes:
    return bytes(_generator(view, "atom").atom_str(pretty=True, encoding="UTF-8"))


def rss(view: FeedView) -> bytes:
    return bytes(_generator(view, "rss").rss_str(pretty=True, encoding="UTF-8"))
