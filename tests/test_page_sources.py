"""Page sources: an outlet with no feed, read off its index page by CSS selectors. A real HTTP
server on 127.0.0.1 serves the pages (tests/data/site); storage is real SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest
from click.testing import CliRunner

from aggregator.cli import cli
from aggregator.config import Config, load_text
from aggregator.feed import webpage
from aggregator.storage import Storage
from tests.feedserver import FeedServer, Reply, Request, Route
from tests.support import Build, Clock

SITE = Path(__file__).parent / "data" / "site"
INDEX = (SITE / "opinion-index.html").read_bytes()
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PAGE = "{items: article.column, title: .title, date: 'time, .date', summary: p.lead}"


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def config_for(server: FeedServer, page: str = PAGE, path: str = "/opinion/") -> Config:
    text = (
        "sections: [{id: opinion, title: Opinion}]\n"
        "topics: [{id: palestine, title: Palestine, keywords: [Rafah, Gaza]}]\n"
        f"sources:\n  - {{id: south, url: '{server.url(path)}', section: opinion, "
        f"page: {page}}}\n"
        "polling: {timeout: 3s, host_gap: 0s}\n"
    )
    return load_text(text, "test.yaml", env={})


def index_route(body: bytes, etag: str = '"1"') -> Route:
    def route(request: Request) -> Reply:
        headers = {"Content-Type": "text/html; charset=utf-8", "ETag": etag}
        if request.header("if-none-match") == etag:
            return Reply(304, b"", headers)
        return Reply(200, body, headers)

    return route


class Rules:
    def __init__(self, items: str, link: str | None = None, title: str | None = None) -> None:
        self.items, self.link, self.title = items, link, title
        self.date: str | None = "time, .date"
        self.summary: str | None = "p.lead"


# -- what the selectors find ------------------------------------------------------------------


def test_the_selectors_find_each_article_once_with_its_link_title_date_and_lead() -> None:
    page = webpage.articles(
        INDEX, "https://southern.example/opinion/", Rules("article.column", title=".title"), NOW
    )
    assert (page.title, page.language) == ("Opinion | Southern News", "en")
    assert [(a.link, a.title, a.published) for a in page.articles] == [
        (
            "https://southern.example/opinion/the-long-road-to-a-ceasefire-20261129-0012.html",
            "The Long Road to a Ceasefire",
            datetime(2026, 11, 29, 19, 5, tzinfo=UTC),  # 14:05 at -05:00
        ),
        (  # a relative link, resolved against the page
            "https://southern.example/opinion/water-is-a-border-too-20261128-0031.html"
            "?utm_source=home",
            "Water Is a Border Too",
            datetime(2026, 11, 28, 9, 30, tzinfo=UTC),  # "28 Nov 2026, 09:30": no zone, UTC
        ),
        (  # "2 days ago" is no date: the item dates from when it is first seen
            "https://southern.example/opinion/what-the-summit-did-not-say-20261127-0007.html",
            "What the Summit Did Not Say",
            None,
        ),
    ]
    assert page.articles[0].summary_html == (
        "Negotiators in <b>Cairo</b> met again on Saturday as aid convoys waited at the Rafah "
        "crossing."
    )
    assert page.articles[2].date_text == "2 days ago"
    # the advertisement has no link: left out, and said
    assert page.notes == ("1 of 5 items had no link and were left out",)


def test_without_link_and_title_selectors_the_items_own_link_and_its_text_are_used() -> None:
    page = webpage.articles(INDEX, "https://southern.example/opinion/", Rules(".latest h2 a"), NOW)
    assert [a.title for a in page.articles] == [
        "The Long Road to a Ceasefire",
        "Water Is a Border Too",
        "What the Summit Did Not Say",
    ]
    first_link = webpage.articles(INDEX, "https://s.example/", Rules("article.featured"), NOW)
    assert first_link.articles[0].title == "The Long Road to a Ceasefire"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (
            '<time datetime="2026-11-29T14:05:00+02:00">yesterday</time>',
            datetime(2026, 11, 29, 12, 5),
        ),
        ('<meta itemprop="datePublished" content="2026-11-02">', datetime(2026, 11, 2)),
        ("<span>November 29, 2026 at 2:05 pm</span>", datetime(2026, 11, 29, 14, 5)),
        ("<span>Posted 29/11/2026</span>", datetime(2026, 11, 29)),
        ("<span>Nov 29</span>", datetime(2026, 11, 29)),  # this year's
        ("<span>Dec 30</span>", datetime(2025, 12, 30)),  # last year's: not in the future
        ("<span>3 hours ago</span>", None),
        ('<time datetime="2026-01-01T00:00+99:00">x</time>', None),  # no such offset
        ("<span>29 Nov 2026 14:05 +2400</span>", None),
        ('<time datetime="0001-01-01T05:00:00+10:00">x</time>', None),  # before year 1 in UTC
        ("<span>2026</span>", None),
        ("<span>Updated</span>", None),
        ('<time datetime="not a date">x</time>', None),
    ],
)
def test_dates_as_pages_write_them(written: str, expected: datetime | None) -> None:
    element = lxml.html.fragment_fromstring(written)
    found, _ = webpage.page_date(element, NOW)
    assert found == (expected.replace(tzinfo=UTC) if expected else None)


def test_a_page_of_thousands_of_items_is_read_up_to_the_bound() -> None:
    body = (
        b"<html><body><ul>"
        + b"".join(b"<li><a href='/a/%d'>Story %d</a></li>" % (n, n) for n in range(2500))
        + b"</ul></body></html>"
    )
    page = webpage.articles(body, "http://h.example/", Rules("li"), NOW)
    assert len(page.articles) == webpage.MAX_ARTICLES
    assert page.notes == ("2,500 items matched; the first 1,000 were read",)


# -- polling a page source --------------------------------------------------------------------


def test_a_page_source_stores_its_articles_and_polls_the_page_conditionally(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    clock.now = NOW  # the page's dates are in the past (a future date is not taken)
    server.routes["/opinion/"] = index_route(INDEX)
    h = harness_for(config_for(server))
    first = h.poll()["south"]
    assert (first.ok, first.new, first.discovered) == (True, 3, None)
    items = {i.entry.title: i for i in storage.recent_items(source_id="south")}
    ceasefire = items["The Long Road to a Ceasefire"]
    assert ceasefire.entry.link == server.url(
        "/opinion/the-long-road-to-a-ceasefire-20261129-0012.html"
    )
    assert ceasefire.published == datetime(2026, 11, 29, 19, 5, tzinfo=UTC)
    assert "Rafah" in ceasefire.entry.summary and "palestine" in ceasefire.topics
    assert ceasefire.section_id == "opinion"
    state = storage.source("south")
    assert state is not None and state.feed_title == "Opinion | Southern News"
    assert state.last_warning == "1 of 5 items had no link and were left out"

    clock.advance(minutes=40)
    second = h.poll()["south"]
    assert second.status == 304
    assert server.requests_to("/opinion/")[-1].headers["if-none-match"] == '"1"'

    # a new column goes up at the top of the list
    new = INDEX.replace(
        b'<section class="latest">',
        b'<section class="latest"><article class="column"><h2 class="title">'
        b'<a href="/opinion/gaza-after-the-rain-20261130-0003.html">Gaza After the Rain</a></h2>'
        b'<time datetime="2026-11-30T08:00:00Z">today</time></article>',
    )
    server.routes["/opinion/"] = index_route(new, etag='"2"')
    clock.advance(minutes=40)
    third = h.poll()["south"]
    assert (third.new, third.unchanged) == (1, 3)
    assert storage.count_items("south") == 4


def test_selectors_that_find_nothing_fail_the_source_and_say_how_to_check(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    # the site's home page names a feed, but a page source is never searched for one
    server.routes["/"] = lambda r: Reply(
        200, (SITE / "home.html").read_bytes(), {"Content-Type": "text/html"}
    )
    h = harness_for(config_for(server, page="{items: div.redesigned}", path="/"))
    result = h.poll()["south"]
    assert not result.ok and result.kind == "parse_error"
    assert result.error == (
        "the page's selectors found no article: `items: div.redesigned` matched nothing (has "
        "the page changed? `aggregator poll --source ID --dry-run` shows what the selectors find)"
    )
    assert server.requests_to("/feed/") == []


# -- what editors see -------------------------------------------------------------------------


def test_a_dry_run_shows_what_the_selectors_find_and_stores_nothing(
    server: FeedServer, tmp_path: Path
) -> None:
    server.routes["/opinion/"] = index_route(INDEX)
    database = tmp_path / "a.db"
    (tmp_path / "feeds.yaml").write_text(
        "sections: [{id: opinion, title: Opinion}]\n"
        "topics: [{id: palestine, title: Palestine, keywords: [Rafah]}]\n"
        f"sources:\n  - {{id: south, url: '{server.url('/opinion/')}', section: opinion, "
        f"page: {PAGE}}}\n"
        "polling: {host_gap: 0s}\n"
        f"storage: {{url: 'sqlite:///{database}'}}\n"
    )
    config = str(tmp_path / "feeds.yaml")
    shown = CliRunner().invoke(cli, ["poll", "-c", config, "--source", "south", "--dry-run"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"south: 3 items from {server.url('/opinion/')} (page)"
    assert lines[1:5] == [
        "  1. The Long Road to a Ceasefire",
        f"     {server.url('/opinion/the-long-road-to-a-ceasefire-20261129-0012.html')}",
        "     2026-11-29 19:05 UTC (the page says '2026-11-29T14:05:00-05:00') · section opinion"
        " · topics: palestine",
        "     Negotiators in Cairo met again on Saturday as aid convoys waited at the Rafah "
        "crossing.",
    ]
    assert (
        "     no date (dated when first seen) (the page says '2 days ago') · section opinion · "
        "topics: none"
    ) in lines
    assert "  warning: 1 of 5 items had no link and were left out" in lines
    assert lines[-1] == "Nothing was stored (--dry-run)."
    assert not database.exists()
    as_json = CliRunner().invoke(
        cli, ["poll", "-c", config, "--source", "south", "--dry-run", "--json"]
    )
    (report,) = json.loads(as_json.output)
    assert [i["date_as_written"] for i in report["items"]] == [
        "2026-11-29T14:05:00-05:00",
        "28 Nov 2026, 09:30",
        "2 days ago",
    ]
    assert report["format"] == "html" and report["error"] is None
    refused = CliRunner().invoke(cli, ["poll", "-c", config, "--dry-run"])
    assert refused.exit_code == 2 and "--dry-run shows named sources" in refused.output


def test_check_rejects_a_selector_that_cannot_compile_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "sections: [{id: opinion, title: Opinion}]\n"
        "sources:\n"
        "  - id: south\n"
        "    url: https://southern.example/opinion/\n"
        "    section: opinion\n"
        "    page:\n"
        "      items: 'article:nth-child(odd'\n"
    )
    done = CliRunner().invoke(cli, ["check", str(path)])
    assert done.exit_code == 2
    assert done.output.splitlines()[0].startswith(
        f"{path}:7:14: sources[0].page.items: `article:nth-child(odd` is not a CSS selector"
    )
    # a namespace compiles, and could only fail when run: it is refused here
    path.write_text(path.read_text().replace("'article:nth-child(odd'", "'ns|article'"))
    done = CliRunner().invoke(cli, ["check", str(path)])
    assert done.exit_code == 2 and "`ns|article` cannot be used on a web page" in done.output
