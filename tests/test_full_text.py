"""Full text: a teaser-only feed whose items get their article page's main text, fetched once,
within the poll's bounds. A real HTTP server on 127.0.0.1 serves the feed and the article pages
(tests/data/site); storage is real SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from aggregator.config import Config, load_text
from aggregator.health import Health, assess
from aggregator.poll import Poller, make_fetcher
from aggregator.process.categorise import SectionChoice, TopicVerdict
from aggregator.storage import Storage
from aggregator.types import Item, SourceState
from tests.feedserver import FeedServer, Reply, Route, feed_file
from tests.support import Build, Clock

SITE = Path(__file__).parent / "data" / "site"
ARTICLE = (SITE / "article-ceasefire.html").read_bytes()
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def teasers(server: FeedServer, paths: list[str], extra: str = "") -> bytes:
    """An RSS feed of one-line teasers, each linking to an article page on the server."""
    items = "".join(
        f"<item><guid>{server.url(path)}</guid><title>Story {n}</title>"
        f"<link>{server.url(path)}</link>"
        f"<description>Negotiators met again in Cairo on Saturday. {extra}</description>"
        f"<pubDate>{format_datetime(datetime(2026, 11, 29, n, tzinfo=UTC))}</pubDate></item>"
        for n, path in enumerate(paths)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>South</title>'
        f"<link>{server.url('/')}</link><description>d</description>{items}</channel></rss>"
    ).encode()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def config_for(server: FeedServer, polling: str = "", max_size: str = "64KiB") -> Config:
    text = (
        "sections: [{id: opinion, title: Opinion}]\n"
        "topics: [{id: palestine, title: Palestine, keywords: [Gaza]}]\n"
        f"sources:\n  - {{id: south, url: '{server.url('/feed.xml')}', section: opinion, "
        "full_text: true}\n"
        f"polling: {{timeout: 2s, max_size: {max_size}, host_gap: 0s{polling}}}\n"
    )
    return load_text(text, "test.yaml", env={})


def by_link(storage: Storage) -> dict[str, Item]:
    return {i.entry.link or "": i for i in storage.recent_items(source_id="south")}


def page(body: bytes, content_type: str = "text/html; charset=utf-8", delay: float = 0) -> Route:
    return lambda r: Reply(200, body, {"Content-Type": content_type}, delay=delay)


def test_a_teaser_feed_gets_its_articles_text_once_and_is_filed_on_it(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    clock.now = NOW
    server.routes["/feed.xml"] = feed_file(teasers(server, ["/a/ceasefire.html"]), etag='"1"')
    server.routes["/a/ceasefire.html"] = page(ARTICLE)
    h = harness_for(config_for(server))
    first = h.poll()["south"]
    assert (first.ok, first.new, first.articles, first.article_failures) == (True, 1, 1, 0)
    item = by_link(storage)[server.url("/a/ceasefire.html")]
    # the article's paragraphs, not the site's menus, "most read" box, tags or footer
    assert item.entry.content.startswith("<p>For the fourth time this month, delegations")
    assert "Outside the hotel, the arithmetic of the war" in item.entry.content
    for chrome in ("Most read", "Storm season", "Privacy", "window.ads", "Multimedia"):
        assert chrome not in item.entry.content
    assert item.entry.summary == "Negotiators met again in Cairo on Saturday."  # the teaser
    # "Gaza" is only in the article: the item is filed on its full text
    assert item.topics == ("palestine",) and item.article_error is None

    clock.advance(minutes=40)
    second = h.poll()["south"]
    assert (second.status, second.articles) == (304, 0)
    # the publisher edits the teaser: the item is updated, and keeps its article's text
    server.routes["/feed.xml"] = feed_file(
        teasers(server, ["/a/ceasefire.html"], extra="(updated)"), etag='"2"'
    )
    clock.advance(minutes=40)
    third = h.poll()["south"]
    assert (third.updated, third.articles) == (1, 0)
    item = by_link(storage)[server.url("/a/ceasefire.html")]
    assert "(updated)" in item.entry.summary and "Outside the hotel" in item.entry.content
    assert len(server.requests_to("/a/ceasefire.html")) == 1  # fetched once, not every poll


def test_articles_that_cannot_be_read_are_noted_and_never_fail_the_poll(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    clock.now = NOW
    paths = ["/a/slow.html", "/a/huge.html", "/a/report.pdf", "/a/empty.html", "/a/gone.html"]
    server.routes["/feed.xml"] = feed_file(teasers(server, paths))
    server.routes["/a/slow.html"] = page(ARTICLE, delay=3)  # past the 2 s all of them get
    server.routes["/a/huge.html"] = page(ARTICLE + b"<p>" + b"x" * 100_000 + b"</p>")
    server.routes["/a/report.pdf"] = page(b"%PDF-1.7 ...", "application/pdf")
    server.routes["/a/empty.html"] = page(b"<html><body><nav>Home</nav><p>Hi.</p></body></html>")
    # /a/gone.html has no route: a 404
    h = harness_for(config_for(server))
    result = h.poll()["south"]
    assert result.ok and result.new == 5
    assert (result.articles, result.article_failures) == (5, 5)
    items = by_link(storage)
    errors = {path: items[server.url(path)].article_error for path in paths}
    assert errors["/a/huge.html"] == "the page is larger than the limit of 65,536 bytes"
    assert errors["/a/report.pdf"] == "not a web page (application/pdf)"
    assert errors["/a/empty.html"] == "no article text found on the page"
    assert errors["/a/gone.html"] == "HTTP 404 Not Found"
    # the oldest, so the last: it had what was left of the 2 s the five pages share
    assert (errors["/a/slow.html"] or "").startswith("timed out after")
    for path in paths:  # the items keep the feed's teaser
        assert items[server.url(path)].entry.content == ""
    state = storage.source("south")
    assert state is not None and state.last_error is None and state.last_article_error
    assert state.last_article_error.startswith(
        f"5 of 5 article pages could not be read (the first: {server.url('/a/gone.html')}: HTTP 404"
    )
    assert assess(state, 3) is Health.WARNING
    clock.advance(minutes=40)
    h.poll()
    for path in ("/a/huge.html", "/a/report.pdf", "/a/empty.html", "/a/gone.html"):
        assert len(server.requests_to(path)) == 1  # a failure is not fetched again either


def test_at_most_articles_per_poll_pages_a_poll_the_rest_at_the_next(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    clock.now = NOW
    paths = [f"/a/{n}.html" for n in range(5)]
    server.routes["/feed.xml"] = feed_file(teasers(server, paths), etag='"1"')
    for path in paths:
        server.routes[path] = page(ARTICLE)
    h = harness_for(config_for(server, polling=", articles_per_poll: 2"))
    assert h.poll()["south"].articles == 2
    # the latest published first: the first poll read the two latest stories
    assert [len(server.requests_to(p)) for p in paths] == [0, 0, 0, 1, 1]
    counts = []
    for _ in range(3):
        clock.advance(minutes=40)
        counts.append(h.poll()["south"].articles)
    assert counts == [2, 1, 0]
    assert [len(server.requests_to(p)) for p in paths] == [1] * 5
    assert all("Outside the hotel" in i.entry.content for i in by_link(storage).values())


# -- the publisher's own filing, dates, language and canonical address -------------------------


def filing_config(server: FeedServer) -> Config:
    text = (
        "sections:\n"
        "  - {id: news, title: News}\n"
        "  - {id: opinion, title: Opinion, categories: [Opinion]}\n"
        "topics:\n"
        "  - {id: palestine, title: Palestine, keywords: ['Palestin*']}\n"
        "  - {id: egypt, title: Egypt, keywords: [Egypt], fields: [title, summary]}\n"
        f"sources:\n  - {{id: south, url: '{server.url('/feed.xml')}', section: news, "
        "full_text: true}\n"
        "polling: {timeout: 3s, host_gap: 0s}\n"
    )
    return load_text(text, "test.yaml", env={})


def test_the_publishers_own_section_and_tags_file_the_item_and_explain_says_where(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build, tmp_path: Path
) -> None:
    clock.now = NOW
    server.routes["/feed.xml"] = feed_file(teasers(server, ["/a/ceasefire.html"]))
    server.routes["/a/ceasefire.html"] = page(ARTICLE)
    h = harness_for(filing_config(server))
    assert h.poll()["south"].articles == 1
    item = by_link(storage)[server.url("/a/ceasefire.html")]
    # neither the teaser nor the article's text says "Palestine" or "Opinion": the page's
    # JSON-LD, meta and labels do
    assert "Palestin" not in item.entry.content + item.entry.summary
    assert item.section_id == "opinion" and item.topics == ("palestine",)
    assert ("breadcrumb", "Opinion") in item.entry.publisher
    assert ("section", "Palestine") in item.entry.publisher
    assert ("breadcrumb", "Home") not in item.entry.publisher  # "Home" says nothing
    # what the teaser feed did not give, the page does: update time, picture, language
    assert item.entry.updated == datetime(2026, 11, 29, 23, 40, tzinfo=UTC)
    assert item.entry.image == "https://southern.example/media/2026/11/rafah-convoy.jpg"
    assert item.entry.language == "en"
    # a topic that does not look at the publisher's filing is not given by it (the page's tags
    # say Egypt; egypt looks in title and summary only)
    assert "egypt" not in item.topics
    details = storage.item_details(item.id)
    assert details is not None
    section = SectionChoice.from_json(item.section_id or "", details.section_reason)
    assert section.describe() == (
        "the publisher files it under 'Opinion' in the page's breadcrumb (category rule 'Opinion')"
    )
    verdict = TopicVerdict.from_json("palestine", details.topic_reasons["palestine"])
    assert "'Palestine' ('Palestin*' in the page's section)" in verdict.describe()


def test_a_page_in_another_language_gives_its_date_language_and_canonical_link(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    clock.now = NOW
    link = server.url("/a/es.html?id=7&from=rss")
    feed = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Sur</title>'
        f"<link>{server.url('/')}</link><description>d</description>"
        f"<item><guid isPermaLink='false'>es-7</guid><title>Gaza: la ayuda sigue esperando</title>"
        f"<link>{link.replace('&', '&amp;')}</link><description>Camiones en Rafah.</description>"
        "</item></channel></rss>"
    ).encode()
    server.routes["/feed.xml"] = feed_file(feed)
    body = (
        (SITE / "article-es.html")
        .read_bytes()
        .replace(b"https://southern.example/", server.url("/").encode())
    )
    server.routes["/a/es.html?id=7&from=rss"] = page(body)
    h = harness_for(filing_config(server))
    h.poll()
    (item,) = storage.recent_items(source_id="south")
    # the feed gave no date and no language: the page's stand in
    assert item.entry.published == datetime(2026, 11, 30, 7, 15, tzinfo=UTC)
    assert item.entry.language == "es"
    assert item.entry.canonical_link == server.url(
        "/es/noticias/palestina/gaza-la-ayuda-sigue-esperando-20261130-0004.html"
    )
    # "Palestina" in the page's breadcrumb trail (HTML, no JSON-LD) is the Palestin* topic
    assert item.topics == ("palestine",)
    assert ("label", "Análisis") in item.entry.publisher


def test_a_page_naming_its_front_page_canonical_does_not_join_every_article_into_one_story(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    clock.now = NOW
    paths = ["/a/one.html", "/a/two.html"]
    server.routes["/feed.xml"] = feed_file(teasers(server, paths))
    wrong = ARTICLE.replace(
        b'href="https://southern.example/opinion/the-long-road-to-a-ceasefire-20261129-0012.html"',
        f'href="{server.url("/")}"'.encode(),
    )
    for path in paths:
        server.routes[path] = page(wrong)
    harness_for(filing_config(server)).poll()
    items = by_link(storage)
    assert [items[server.url(p)].entry.canonical_link for p in paths] == [
        server.url(p) for p in paths
    ]


def test_article_pages_are_fetched_politely_a_host_gap_apart(
    server: FeedServer, storage: Storage, clock: Clock
) -> None:
    clock.now = NOW
    paths = [f"/a/{n}.html" for n in range(2)]
    server.routes["/feed.xml"] = feed_file(teasers(server, paths))
    for path in paths:
        server.routes[path] = page(ARTICLE)
    text = (
        "sections: [{id: opinion, title: Opinion}]\n"
        f"sources:\n  - {{id: south, url: '{server.url('/feed.xml')}', section: opinion, "
        "full_text: true}\n"
        "polling: {timeout: 5s, host_gap: 1s, per_host: 1}\n"
    )
    config = load_text(text, "test.yaml", env={})
    storage.sync_sources(config.sources)
    with make_fetcher(config) as fetcher:  # the config's politeness (the harness has none)
        poller = Poller(storage, config, fetcher)
        try:
            (result,) = poller.run_once()
        finally:
            poller.close()
    assert (result.articles, result.article_failures) == (2, 0)
    starts = sorted(r.at for path in ["/feed.xml", *paths] for r in server.requests_to(path))
    # the feed and its pages are one host's: each request starts a gap after the last
    assert len(starts) == 3
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(starts))


# -- hostile and failing article pages --------------------------------------------------------


HOSTILE = {
    # a codec Python knows and libxml2 does not
    "/h/codec.html": b'<html><head><meta charset="base64"></head><body><p>x</p></body></html>',
    # JSON-LD with a 400-digit breadcrumb position and a date of year 1 with an offset
    "/h/jsonld.html": ARTICLE.replace(b'"position": 1', b'"position": ' + b"9" * 400).replace(
        b"2026-11-29T14:05:00-05:00", b"0001-01-01T05:00:00+10:00"
    ),
    # a base that is no URL, and a canonical link of 1,900 CJK characters (5.7 KB)
    "/h/canonical.html": ARTICLE.replace(b"<head>", b'<head><base href="http://[bad">').replace(
        b"the-long-road-to-a-ceasefire-20261129-0012.html", ("長" * 1900).encode()
    ),
    # more elements than an extractor is given
    "/h/complex.html": b"<html><body>" + b"<p>w</p>" * 13_000 + b"</body></html>",
}


def test_hostile_article_pages_are_each_their_items_note_and_the_poll_goes_on(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    clock.now = NOW
    paths = [*HOSTILE, "/a/fine.html"]
    server.routes["/feed.xml"] = feed_file(teasers(server, paths))
    for path, body in HOSTILE.items():
        server.routes[path] = page(body)
    server.routes["/a/fine.html"] = page(ARTICLE)
    h = harness_for(config_for(server, max_size="1MiB"))
    result = h.poll()["south"]
    assert result.ok and result.kind == "" and (result.new, result.articles) == (5, 5)
    items = by_link(storage)
    assert "Outside the hotel" in items[server.url("/a/fine.html")].entry.content
    assert "Outside the hotel" in items[server.url("/h/jsonld.html")].entry.content
    jsonld = items[server.url("/h/jsonld.html")]
    assert jsonld.published == datetime(2026, 11, 29, 1, tzinfo=UTC)  # the feed's, kept
    canonical = items[server.url("/h/canonical.html")]
    assert canonical.entry.canonical_link == server.url("/h/canonical.html")  # 5.7 KB: not used
    assert items[server.url("/h/codec.html")].article_error == "no article text found on the page"
    assert items[server.url("/h/complex.html")].article_error == (
        "the page is too large to look for an article in (13,002 elements; at most 12,000)"
    )
    state = storage.source("south")
    assert state is not None and state.last_error is None and state.consecutive_failures == 0


def test_a_feed_edit_keeps_what_the_article_page_added(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    clock.now = NOW
    server.routes["/feed.xml"] = feed_file(teasers(server, ["/a/ceasefire.html"]), etag='"1"')
    server.routes["/a/ceasefire.html"] = page(ARTICLE)
    h = harness_for(filing_config(server))
    h.poll()
    server.routes["/feed.xml"] = feed_file(
        teasers(server, ["/a/ceasefire.html"], extra="(corrected)"), etag='"2"'
    )
    clock.advance(minutes=40)
    assert h.poll()["south"].updated == 1
    item = by_link(storage)[server.url("/a/ceasefire.html")]
    assert "(corrected)" in item.entry.summary
    # still filed on the publisher's own filing and text, with the page's picture and language
    assert (item.section_id, item.topics) == ("opinion", ("palestine",))
    assert item.entry.image == "https://southern.example/media/2026/11/rafah-convoy.jpg"
    assert item.entry.updated == datetime(2026, 11, 29, 23, 40, tzinfo=UTC)
    assert item.entry.language == "en" and ("breadcrumb", "Opinion") in item.entry.publisher


def test_a_page_that_fails_for_a_while_is_tried_again_a_few_times(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    clock.now = NOW
    server.routes["/feed.xml"] = feed_file(teasers(server, ["/a/busy.html", "/a/down.html"]))
    answers = iter([Reply(503, b"busy"), Reply(200, ARTICLE, {"Content-Type": "text/html"})])
    server.routes["/a/busy.html"] = lambda r: next(answers)
    server.routes["/a/down.html"] = lambda r: Reply(502, b"down")
    h = harness_for(config_for(server))
    polled = []
    for _ in range(5):
        polled.append(h.poll()["south"].articles)
        clock.advance(minutes=40)
    items = by_link(storage)
    assert "Outside the hotel" in items[server.url("/a/busy.html")].entry.content
    assert len(server.requests_to("/a/busy.html")) == 2  # a 503, then read
    assert len(server.requests_to("/a/down.html")) == 3  # three tries, then let be
    assert items[server.url("/a/down.html")].article_error == "HTTP 502 Bad Gateway"
    assert polled == [2, 2, 1, 0, 0]


def test_no_article_is_fetched_when_the_feed_fails_or_lives_on_a_private_address(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    clock.now = NOW
    local = server.url("/a/inside.html").replace("127.0.0.1", "localhost")
    feed = teasers(server, ["/a/ceasefire.html"]).replace(
        server.url("/a/ceasefire.html").encode(), local.encode()
    )
    server.routes["/feed.xml"] = feed_file(feed, etag='"1"')
    server.routes["/a/inside.html"] = page(ARTICLE)
    h = harness_for(config_for(server))
    assert h.poll()["south"].article_failures == 1
    (item,) = storage.recent_items(source_id="south")
    # the feed is on 127.0.0.1; its link names another host that is this machine: refused
    assert item.article_error is not None
    assert item.article_error.startswith("not fetched: localhost is a private or local network")
    assert server.requests_to("/a/inside.html") == []
    # a failing feed fetches no article pages (its host may well be down)
    server.routes["/feed.xml"] = feed_file(teasers(server, ["/a/new.html"]), etag='"2"')
    h.poll()  # stores /a/new.html, reads it
    server.routes["/feed.xml"] = lambda r: Reply(500, b"oops")
    clock.advance(minutes=40)
    assert h.poll()["south"].articles == 0


def test_a_poll_that_fails_midway_ends_stores_what_was_in_flight_and_releases_the_rest(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    """A claim that fails while a source reads its article pages (whose thread waits on the
    fetcher's loop) ends the poll with the error: the poll once hung there, and dropped the
    sources it had fetched. What was in flight is stored; what was claimed is released."""
    import threading

    from aggregator.exceptions import StorageError

    clock.now = NOW
    server.routes["/feed.xml"] = feed_file(teasers(server, ["/a/slow.html"]), etag='"1"')
    server.routes["/a/slow.html"] = page(ARTICLE, delay=0.5)
    others = "".join(
        f"  - {{id: z{n}, url: '{server.url(f'/z{n}.xml')}', section: opinion}}\n" for n in range(6)
    )
    for n in range(6):
        server.routes[f"/z{n}.xml"] = feed_file(teasers(server, []), etag=f'"z{n}"')
    text = (
        "sections: [{id: opinion, title: Opinion}]\n"
        f"sources:\n  - {{id: south, url: '{server.url('/feed.xml')}', section: opinion, "
        f"full_text: true}}\n{others}"
        "polling: {timeout: 2s, host_gap: 0s, concurrency: 2}\n"
    )
    h = harness_for(load_text(text, "test.yaml", env={}))
    claims = itertools.count()
    claim = storage.claim_due_sources

    def failing_after_the_first(owner: str, lease: timedelta, limit: int) -> list[SourceState]:
        if next(claims) >= 1:
            raise StorageError("the database failed: disk I/O error")
        return claim(owner, lease, limit)

    storage.claim_due_sources = failing_after_the_first  # type: ignore[method-assign]
    outcome: list[BaseException | None] = []

    def poll() -> None:
        try:
            h.poll()
            outcome.append(None)
        except BaseException as exc:  # what the poll raised is the subject
            outcome.append(exc)

    polling = threading.Thread(target=poll, daemon=True)
    polling.start()
    polling.join(30)  # a guard against the hang, not a timing: the poll takes about a second
    assert not polling.is_alive(), "the poll hung"
    assert isinstance(outcome[0], StorageError)
    del storage.claim_due_sources
    states = {s.id: s for s in storage.sources()}
    assert all(s.lease_owner is None for s in states.values())  # stored or released, none held
    stored = [sid for sid, s in states.items() if s.last_status is not None]
    assert stored  # the sources in flight when the claim failed were stored
    assert states["south"].last_status == 200 and by_link(storage)  # its article pass finished
