"""HTML pages for people: the index of everything published, a preview of each feed, errors.

Pages carry `<link rel="alternate">` for every feed they show, so pasting a page's address into a
feed reader finds the feeds (autodiscovery).
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.publish.catalog import (
    CATALOGUED,
    FORMAT_NAMES,
    KIND_TITLES,
    Catalog,
    Kind,
    Publication,
)
from aggregator.publish.view import EntryView, FeedView, Links, SearchLinks
from aggregator.search.query import MAX_CHARS
from aggregator.templating import render


@dataclass(frozen=True)
class FeedLink:
    name: str
    title: str
    media_type: str
    href: str


def feed_links(links: Links) -> list[FeedLink]:
    title = links.publication.title
    return [
        FeedLink(FORMAT_NAMES[fmt], f"{title} ({FORMAT_NAMES[fmt]})", media_type, href)
        for fmt, media_type, href in links.alternates()
    ]


@dataclass(frozen=True)
class Listed:
    title: str
    description: str
    page: str
    feeds: list[FeedLink]


@dataclass(frozen=True)
class Group:
    title: str
    publications: list[Listed]


@dataclass(frozen=True)
class Latest:
    """A section's newest stories, as the front page shows them."""

    title: str
    page: str
    entries: tuple[EntryView, ...]


@dataclass(frozen=True)
class DigestListing:
    """A digest on the front page: what it is, when it comes, where to sign up."""

    title: str
    when: str
    signup: str
    holds: str = ""


def index(
    catalog: Catalog,
    base: str,
    site_title: str,
    overrides: str | None = None,
    latest: tuple[Latest, ...] = (),
    digests: tuple[DigestListing, ...] = (),
    search: str | None = None,
) -> str:
    """The front page; `search` is where the search box sends its query (None: no box)."""
    groups = []
    alternates: list[FeedLink] = []
    for kind in CATALOGUED:
        listed = []
        for publication in catalog.of_kind(kind):
            links = Links(base, publication)
            feeds = feed_links(links)
            alternates += feeds
            listed.append(Listed(publication.title, publication.description, links.page, feeds))
        if listed:
            groups.append(Group(KIND_TITLES[kind], listed))
    return render(
        "index.html",
        overrides,
        site_title=site_title,
        groups=groups,
        alternates=alternates,
        opml_url=f"{base}opml.xml",
        latest=latest,
        digests=digests,
        sections=catalog.of_kind(Kind.SECTIONS),
        topics=catalog.of_kind(Kind.TOPICS),
        page_of=lambda publication: Links(base, publication).page,
        search=search,
    )


def preview(view: FeedView, overrides: str | None = None, search: str | None = None) -> str:
    publication: Publication = view.publication
    links = view.links
    feeds = feed_links(links)
    newer = None
    if view.previous is not None:
        newer = f"{links.page}?before={view.previous}" if view.previous else links.page
    older = f"{links.page}?before={view.next}" if view.next else None
    return render(
        "feed.html",
        overrides,
        site_title=view.site_title,
        home=links.base,
        kind_title=KIND_TITLES[publication.kind],
        title=publication.title,
        description=publication.description,
        feeds=feeds,
        alternates=feeds,
        entries=view.entries,
        newer=newer,
        older=older,
        search=search,
    )


@dataclass(frozen=True)
class Scopes:
    """What a search page offers to search in: (id, title) of sections and topics, and the
    ones chosen ('' for all)."""

    sections: tuple[tuple[str, str], ...] = ()
    topics: tuple[tuple[str, str], ...] = ()
    section: str = ""
    topic: str = ""


def search(
    base: str,
    site_title: str,
    query: str,
    view: FeedView | None,
    problem: str = "",
    pending: int = 0,
    overrides: str | None = None,
    scopes: Scopes | None = None,
) -> str:
    """The search page: the form, and the results of a query (`view`) or why it was refused."""
    feeds = feed_links(view.links) if view is not None else []
    newer = older = None
    if view is not None and isinstance(view.links, SearchLinks):
        if view.previous is not None:
            newer = view.links.page_at(view.previous or None)
        if view.next:
            older = view.links.page_at(view.next)
    return render(
        "search.html",
        overrides,
        site_title=site_title,
        home=base,
        query=query,
        max_chars=MAX_CHARS,
        searched=view is not None,
        entries=view.entries if view is not None else (),
        page=int(view.before or 1) if view is not None else 1,
        feeds=feeds,
        alternates=feeds,
        problem=problem,
        pending=pending,
        newer=newer,
        older=older,
        scopes=scopes or Scopes(),
        heading=view.publication.title if view is not None else "",
    )


def choose(overrides: str | None = None, **context: object) -> str:
    """A recipient's page to choose what they get of a digest (`choose.html`)."""
    return render("choose.html", overrides, alternates=[], **context)


def error(
    status: int,
    heading: str,
    message: str,
    base: str,
    site_title: str,
    overrides: str | None = None,
) -> str:
    return render(
        "error.html",
        overrides,
        site_title=site_title,
        status=status,
        heading=heading,
        message=message,
        home=base,
        alternates=[],
    )


def notice(
    heading: str,
    message: str,
    base: str,
    site_title: str,
    form: str = "",
    action: str = "",
    overrides: str | None = None,
    offer: object = None,
) -> str:
    """A short page: the outcome of a sign-up or unsubscribe, with the form to do it (`offer`:
    the choices a sign-up form shows)."""
    return render(
        "notice.html",
        overrides,
        site_title=site_title,
        heading=heading,
        message=message,
        home=base,
        form=form,
        action=action,
        alternates=[],
        offer=offer,
    )
