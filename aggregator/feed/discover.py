"""Finding the feed behind a web page (autodiscovery), for a source whose `url` is a page and
for `aggregator discover`.

The feeds a page names (`webpage.feed_links`) are tried in its order; where it names none, the
site's common feed addresses are. Each try is a fetch like any other (the same size and redirect
limits, the same per-host politeness), and all of them share one time budget, so a page with a
dozen dead links costs one fetch's timeout, not twelve. The first that reads as a feed wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from aggregator.exceptions import ParseError
from aggregator.feed import webpage
from aggregator.feed.fetch import Fetcher, FetchRequest, FetchResult, status_text
from aggregator.feed.webpage import FeedLink

T = TypeVar("T")

MAX_TRIES = 6  # fetches for one page's feed: its first links, or the common addresses


class NoFeedError(ParseError):
    """A web page that names no readable feed, with what was tried."""


@dataclass(frozen=True)
class Tried:
    """A feed link that was fetched and not used, and why."""

    link: FeedLink
    problem: str


@dataclass(frozen=True)
class Found(Generic[T]):
    """The feed found: its link (`url` is where it lives, after any permanent redirect), its
    fetch, and what `accept` made of it."""

    link: FeedLink
    fetched: FetchResult
    value: T
    tried: tuple[Tried, ...] = ()


def candidates(page: FetchResult) -> tuple[list[FeedLink], bool]:
    """The links worth trying for a fetched page, and whether they are guesses (the page named
    none, so they are the site's common addresses)."""
    content_type = page.headers.get("content-type")
    named = webpage.feed_links(page.body, page.url, content_type)
    if named:
        return named, False
    return webpage.common_addresses(page.url), True


def problem_of(fetched: FetchResult) -> str | None:
    """Why a fetch gave no document to read, in words; None for a 2xx."""
    if fetched.error is not None:
        return fetched.message or str(fetched.error)
    status = fetched.status or 0
    return None if 200 <= status < 300 else status_text(status)


def find(
    fetcher: Fetcher,
    page: FetchResult,
    accept: Callable[[FetchResult], T],
    *,
    headers: Mapping[str, str] | None = None,
    budget: float = 30.0,
    tries: int = MAX_TRIES,
) -> Found[T]:
    """The first feed of the page that `accept` takes (it raises ParseError for a document
    that is no feed). Raises NoFeedError, saying what was tried, where none is."""
    links, guessed = candidates(page)
    deadline = time.monotonic() + budget
    tried: list[Tried] = []
    host = urlsplit(page.url).hostname
    for link in links[:tries]:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # the source's headers (an API key, say) go to its own host only, not wherever a page
        # links to
        own = dict(headers or {}) if urlsplit(link.url).hostname == host else {}
        fetched = fetcher.fetch(FetchRequest(link.url, headers=own, timeout=left))
        problem = problem_of(fetched)
        if problem is None:
            try:
                value = accept(fetched)
            except ParseError as exc:
                problem = str(exc)
            else:
                where = fetched.permanent_url or link.url
                found = FeedLink(where, link.kind, link.title, link.found)
                return Found(found, fetched, value, tuple(tried))
        tried.append(Tried(link, problem))
    raise NoFeedError(_nothing(links, guessed, tried))


def _nothing(links: Sequence[FeedLink], guessed: bool, tried: Sequence[Tried]) -> str:
    """What an editor reads when a page leads to no feed (a parse error like any document that
    is no feed), with what was tried, grouped by what went wrong: "/feed, /rss: HTTP 404"."""
    groups: dict[str, list[str]] = {}
    for t in tried:
        shown = urlsplit(t.link.url).path if t.link.found == "guess" else t.link.url
        groups.setdefault(t.problem, []).append(shown)
    said = "; ".join(f"{', '.join(where)}: {problem}" for problem, where in groups.items())
    untried = len(links) - len(tried)
    if untried > 0:
        said += f"; {untried} more not tried (out of time or tries)"
    if guessed:
        return (
            "not a readable feed: a web page that names no feed "
            '(no <link rel="alternate"> to RSS, Atom or JSON Feed), and none at the site\'s '
            f"usual addresses ({said})"
        )
    return f"not a readable feed: a web page, and none of the feeds it names could be read: {said}"


MAX_CHECKED = 10  # links `look` fetches and reads for an editor


@dataclass(frozen=True)
class Checked:
    """A feed link as `look` found it: readable (format, title, entries) or why not."""

    link: FeedLink
    problem: str | None = None
    format: str | None = None
    title: str | None = None
    entries: int = 0


@dataclass(frozen=True)
class Report:
    """What `aggregator discover URL` tells an editor."""

    url: str
    problem: str | None = None  # the address itself could not be read
    feed: Checked | None = None  # the address is a feed already
    checked: tuple[Checked, ...] = ()
    guessed: bool = False  # the page named no feed: these are the site's common addresses
    unchecked: tuple[FeedLink, ...] = ()

    @property
    def chosen(self) -> FeedLink | None:
        """The feed a source with this url polls: the address itself, or the first link that
        reads, as the poller picks it."""
        if self.feed is not None:
            return self.feed.link
        return next((c.link for c in self.checked if c.problem is None), None)

    def as_json(self) -> dict[str, object]:
        def one(c: Checked) -> dict[str, object]:
            return {
                "url": c.link.url,
                "kind": c.link.kind,
                "title": c.link.title or c.title,
                "found_in": c.link.found,
                "readable": c.problem is None,
                "problem": c.problem,
                "format": c.format,
                "feed_title": c.title,
                "entries": c.entries if c.problem is None else None,
            }

        chosen = self.chosen
        return {
            "url": self.url,
            "problem": self.problem,
            "is_feed": self.feed is not None,
            "guessed": self.guessed,
            "feeds": [one(c) for c in ((self.feed,) if self.feed else self.checked)],
            "not_checked": [link.url for link in self.unchecked],
            "chosen": chosen.url if chosen else None,
        }


def look(fetcher: Fetcher, url: str, *, budget: float = 60.0) -> Report:
    """Fetch `url`; a feed says so, a page has each feed it names fetched and read (at most
    MAX_CHECKED, within `budget` seconds)."""
    from datetime import UTC, datetime

    from aggregator.feed.parse import parse_document

    def read(fetched: FetchResult, link: FeedLink) -> Checked:
        problem = problem_of(fetched)
        if problem is not None:
            return Checked(link, problem)
        try:
            parsed = parse_document(
                fetched.body, fetched.url, datetime.now(UTC), fetched.headers.get("content-type")
            )
        except ParseError as exc:
            return Checked(link, str(exc))
        where = fetched.permanent_url or link.url
        moved = FeedLink(where, link.kind, link.title, link.found)
        return Checked(moved, None, parsed.format, parsed.title or None, len(parsed.entries))

    page = fetcher.fetch(FetchRequest(url))
    problem = problem_of(page)
    if problem is not None:
        return Report(url, problem=problem)
    itself = read(page, FeedLink(url, "feed", "", "itself"))
    if itself.problem is None:
        return Report(url, feed=itself)
    if not webpage.looks_like_html(page.body, page.headers.get("content-type")):
        return Report(url, problem=f"neither a feed nor a web page: {itself.problem}")
    links, guessed = candidates(page)
    deadline = time.monotonic() + budget
    checked: list[Checked] = []
    for link in links[:MAX_CHECKED]:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        checked.append(read(fetcher.fetch(FetchRequest(link.url, timeout=left)), link))
    if guessed:  # a guess that is not there is no news: only what answered
        checked = [c for c in checked if c.problem is None]
    return Report(
        url,
        checked=tuple(checked),
        guessed=guessed,
        unchecked=tuple(links[len(checked) :]) if not guessed else (),
    )
