"""A reader's search as a page and as feeds: `/search?q=`, `/search.atom?q=` and the others.

Results are the matching items, best first, twenty a page and at most MAX_PAGE pages deep
(deeper pages cost the database more and hardly anyone reads them). A search feed is an
ordinary feed of its query: the same entries, ids and ETags as the page, kept for CACHE_FOR so
a feed reader polling it costs one query in that time, and a 304 after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.config import Filter
from aggregator.exceptions import SearchRefusedError
from aggregator.publish.catalog import Catalog, Kind, Publication
from aggregator.publish.view import FeedView, SearchLinks, entry_view
from aggregator.search.query import Query, parse
from aggregator.storage import Storage

PER_PAGE = 20
MAX_PAGE = 25
CACHE_FOR = timedelta(seconds=30)
DEADLINE = 5.0  # seconds the database may spend on one search
FORMATS = ("atom", "rss", "json")


def page_number(text: str | None) -> int:
    """The page a `page=` parameter asks for (1 without one)."""
    if not text:
        return 1
    # ASCII digits only: `²` and `٣` are digits to str.isdigit, and int() of thousands of
    # digits raises
    if not (text.isascii() and text.isdecimal() and len(text) <= 7 and int(text) >= 1):
        raise SearchRefusedError(f"page={text[:20]!r} is not a page number")
    number = int(text)
    if number > MAX_PAGE:
        raise SearchRefusedError(
            f"results are shown up to page {MAX_PAGE}; add words to narrow the search"
        )
    return number


@dataclass(frozen=True)
class Scope:
    """Where a search looks: one section and one topic at most (None: everywhere)."""

    section: str | None = None
    topic: str | None = None

    @property
    def params(self) -> tuple[tuple[str, str], ...]:
        """The query parameters that say so, in a stable order (cache keys and links)."""
        found = []
        if self.section:
            found.append(("section", self.section))
        if self.topic:
            found.append(("topic", self.topic))
        return tuple(found)


def scope_of(catalog: Catalog, section: str | None, topic: str | None) -> Scope:
    """The scope `section=` and `topic=` ask for; SearchRefusedError for one not configured."""
    if section and section not in catalog.section_titles:
        raise SearchRefusedError(f"there is no section {section[:40]!r} to search in")
    if topic and topic not in catalog.topic_titles:
        raise SearchRefusedError(f"there is no topic {topic[:40]!r} to search in")
    return Scope(section or None, topic or None)


@dataclass(frozen=True)
class Asked:
    """A reader's search, read and checked once: its query, page and scope."""

    query: Query
    page: int
    scope: Scope

    def key(self, fmt: str) -> tuple[str, str, str]:
        """Its document's cache key in `fmt`."""
        where = "".join(f"&{name}={value}" for name, value in self.scope.params)
        return (f"search?{self.query.text}{where}", fmt, str(self.page))


def asked(
    catalog: Catalog, text: str, page: str | None, section: str | None, topic: str | None
) -> Asked:
    """The search the parameters ask for; SearchRefusedError for one that cannot be run
    (empty, too long, only -words, a page, section or topic that is not there)."""
    return Asked(parse(text), page_number(page), scope_of(catalog, section, topic))


def publication(query: Query, site_title: str, catalog: Catalog, scope: Scope) -> Publication:
    where = ""
    if scope.section:
        where += f" in {catalog.section_titles[scope.section]}"
    if scope.topic:
        where += f" on {catalog.topic_titles[scope.topic]}"
    return Publication(
        Kind.SEARCH,
        query.text,
        f"Search: {query.text}{where}",
        f"Items on {site_title}{where} matching {query.text}, best first.",
        Filter(),
        PER_PAGE,
        FORMATS,
    )


@dataclass(frozen=True)
class Sources:
    """Source names and feed addresses, as entries show them."""

    titles: dict[str, str]
    urls: dict[str, str]


def view(
    storage: Storage,
    catalog: Catalog,
    base: str,
    site_title: str,
    since: datetime,
    sources: Sources,
    query: Query,
    page: int,
    scope: Scope | None = None,
) -> FeedView:
    """One page of a query's results."""
    scope = scope or Scope()
    found = storage.search(
        query.fts5(),
        query.tsquery(),
        PER_PAGE + 1,
        (page - 1) * PER_PAGE,
        sections=(scope.section,) if scope.section else (),
        topics=(scope.topic,) if scope.topic else (),
        seconds=DEADLINE,
    )
    more = len(found) > PER_PAGE and page < MAX_PAGE
    searched = publication(query, site_title, catalog, scope)
    entries = tuple(
        entry_view(s, catalog, base, sources.titles, sources.urls) for s in found[:PER_PAGE]
    )
    return FeedView(
        publication=searched,
        links=SearchLinks(base, searched, scope.params),
        entries=entries,
        before=str(page) if page > 1 else None,
        next=str(page + 1) if more else None,
        previous=None if page == 1 else ("" if page == 2 else str(page - 1)),
        hub=None,
        site_title=site_title,
        since=since,
    )
