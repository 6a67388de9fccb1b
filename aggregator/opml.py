"""OPML subscription lists: import other readers' exports as sources, export ours as OPML 2.0.

The standard library's ElementTree reads them: its expat never fetches external entities and, in
the versions Python 3.11 ships, refuses entity-expansion bombs, so a hostile file is only an error.
"""

from __future__ import annotations

import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import urlsplit

from aggregator.config import Config
from aggregator.exceptions import OpmlError


@dataclass(frozen=True)
class OpmlFeed:
    """One feed outline: its URL, its title, and the categories it was filed under (an empty
    URL: an outline with no feed address, which an import reports)."""

    url: str
    title: str
    categories: tuple[str, ...] = ()
    html_url: str | None = None


@dataclass(frozen=True)
class ImportPlan:
    """What an import adds to feeds.yaml, and what it leaves out and why."""

    sections: tuple[dict[str, str], ...] = ()
    sources: tuple[dict[str, str], ...] = ()
    skipped: tuple[str, ...] = field(default=())


def read_opml(data: bytes) -> list[OpmlFeed]:
    """Every feed outline of an OPML document, in document order."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise OpmlError(f"not a well-formed OPML file: {exc}") from None
    if root.tag != "opml":
        raise OpmlError(f"not an OPML file: the root element is <{root.tag}>, not <opml>")
    body = root.find("body")
    if body is None:
        raise OpmlError("the OPML file has no <body>")
    feeds: list[OpmlFeed] = []
    _walk(body, (), feeds)
    return feeds


def _walk(node: ET.Element, path: tuple[str, ...], out: list[OpmlFeed]) -> None:
    for outline in node.findall("outline"):
        title = (outline.get("title") or outline.get("text") or "").strip()
        url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
        if url:
            categories = path or tuple(
                part.strip("/").split("/")[-1]
                for part in (outline.get("category") or "").split(",")
                if part.strip("/ ")
            )
            out.append(OpmlFeed(url, title, categories, outline.get("htmlUrl")))
        elif outline.find("outline") is None and (title or outline.get("htmlUrl")):
            # a leaf with no feed address (a web page, a note): kept so the import says so
            out.append(OpmlFeed("", title, path, outline.get("htmlUrl")))
        _walk(outline, (*path, title) if not url and title else path, out)


def slug(text: str) -> str:
    """An id from a title: `Le Monde: International` -> `le-monde-international`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:64].rstrip("-")


def _unique(base: str, taken: set[str]) -> str:
    candidate, n = base, 2
    while candidate in taken:
        suffix = f"-{n}"
        candidate, n = base[: 64 - len(suffix)] + suffix, n + 1
    taken.add(candidate)
    return candidate


def plan_import(
    feeds: Iterable[OpmlFeed], config: Config | None, default_section: str = "general"
) -> ImportPlan:
    """Turn feeds into new `sections:` and `sources:` entries that fit beside `config`.

    A feed already configured (same URL) is skipped; the first category of a feed becomes its
    section (created when missing); feeds without one go to `default_section`.
    """
    section_ids = {s.id for s in config.sections} if config else set()
    section_titles = {s.title.casefold(): s.id for s in config.sections} if config else {}
    source_ids = {s.id for s in config.sources} if config else set()
    urls = {s.url for s in config.sources} if config else set()
    new_sections: list[dict[str, str]] = []
    new_sources: list[dict[str, str]] = []
    skipped = []

    def section_for(title: str) -> str:
        existing = section_titles.get(title.casefold())
        if existing:
            return existing
        section_id = slug(title) or "general"
        if section_id not in section_ids:
            section_ids.add(section_id)
            new_sections.append(
                {
                    "id": section_id,
                    "title": title if title != section_id else title.replace("-", " ").capitalize(),
                }
            )
        section_titles[title.casefold()] = section_id
        return section_id

    for feed in feeds:
        if not feed.url:
            named = feed.title or feed.html_url
            skipped.append(f"{named!r}: the outline has no feed address (xmlUrl)")
            continue
        parts = urlsplit(feed.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            skipped.append(f"{feed.url}: not an http(s) URL")
            continue
        if feed.url in urls:
            skipped.append(f"{feed.url}: already configured")
            continue
        urls.add(feed.url)
        title = feed.title or parts.hostname
        section = section_for(feed.categories[0] if feed.categories else default_section)
        source_id = _unique(slug(title) or slug(parts.hostname) or "feed", source_ids)
        new_sources.append({"id": source_id, "title": title, "url": feed.url, "section": section})
    return ImportPlan(tuple(new_sections), tuple(new_sources), tuple(skipped))


def write_opml(
    config: Config, title: str, now: datetime, learned: Mapping[str, str] | None = None
) -> bytes:
    """OPML 2.0 of the configured sources, grouped by section, for import into any reader.
    A source is titled as configured, else as its feed calls itself (`learned`: source id ->
    the feed's own title, from polling), else by its id."""
    learned = learned or {}
    groups = [
        (
            section.title,
            [
                OpmlFeed(source.url, source.title or learned.get(source.id) or source.id)
                for source in config.sources
                if source.section == section.id
            ],
        )
        for section in config.sections
    ]
    return write_outlines(title, groups, now)


def write_outlines(
    title: str,
    groups: Iterable[tuple[str, Sequence[OpmlFeed]]],
    now: datetime | None = None,
) -> bytes:
    """OPML 2.0 with one folder per group (empty groups left out); without `now` the same
    feeds always give the same bytes."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    if now is not None:
        ET.SubElement(head, "dateCreated").text = format_datetime(now)
    body = ET.SubElement(root, "body")
    for name, feeds in groups:
        if not feeds:
            continue
        group = ET.SubElement(body, "outline", text=name, title=name)
        for feed in feeds:
            attributes = {"type": "rss", "text": feed.title, "title": feed.title}
            attributes["xmlUrl"] = feed.url
            if feed.html_url:
                attributes["htmlUrl"] = feed.html_url
            ET.SubElement(group, "outline", attributes)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"
