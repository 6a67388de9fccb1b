"""Autodiscovery: a source whose url is a web page is polled at the feed the page names; `aggregator
discover URL` shows a page's feeds. A real HTTP server on 127.0.0.1 serves news-site pages
(tests/data/site) and feeds; storage is real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aggregator.cli import cli
from aggregator.config import Config, load_text
from aggregator.feed import webpage
from aggregator.storage import Storage
from tests.feedserver import FeedServer, Reply, feed_file
from tests.support import Build, Clock, rss

SITE = Path(__file__).parent / "data" / "site"


def page(name: str, content_type: str = "text/html; charset=utf-8") -> Reply:
    return Reply(200, (SITE / name).read_bytes(), {"Content-Type": content_type})


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def config_for(server: FeedServer, path: str, timeout: str = "3s") -> Config:
    text = (
        "sections: [{id: world, title: World}]\n"
        f"sources:\n  - {{id: south, url: '{server.url(path)}', section: world, interval: 10m}}\n"
        f"polling: {{timeout: {timeout}, max_size: 1MiB, host_gap: 0s}}\n"
    )
    return load_text(text, "test.yaml", env={})


# -- what a page names ------------------------------------------------------------------------


def test_a_page_names_its_feeds_in_its_own_order() -> None:
    links = webpage.feed_links((SITE / "home.html").read_bytes(), "https://southern.example/")
    # the REST API's JSON and oEmbed links are alternates too, but no feeds
    assert [(link.url, link.kind, link.title, link.found) for link in links] == [
        ("https://southern.example/feed/", "RSS", "Southern News » Feed", "link"),
        ("https://southern.example/comments/feed/", "RSS", "Southern News » Comments Feed", "link"),
    ]


def test_relative_links_follow_the_base_and_the_declared_encoding() -> None:
    body = (SITE / "section.html").read_bytes()  # ISO-8859-1, said only in a <meta>
    links = webpage.feed_links(body, "https://southern.example/es/noticias/palestina/")
    assert [(link.url, link.kind, link.title) for link in links] == [
        ("https://southern.example/es/noticias/palestina/atom.xml", "Atom", "Palestina · Atom"),
        (
            "https://southern.example/es/noticias/palestina/feed.json",
            "JSON Feed",
            "Palestina · JSON Feed",
        ),
    ]
    # no declaration at all, and bytes that are not UTF-8: windows-1252, as browsers read it
    (link,) = webpage.feed_links((SITE / "cp1252.html").read_bytes(), "http://cafe.example/a/")
    assert (link.url, link.title) == ("http://cafe.example/rss.xml", "Café – noticias")


def test_a_plain_link_that_looks_like_a_feed_counts_when_the_head_names_none() -> None:
    body = (SITE / "anchors.html").read_bytes()
    (link,) = webpage.feed_links(body, "https://southern.example/opinion/")
    assert (link.url, link.kind, link.title, link.found) == (
        "https://southern.example/opinion/feed.rss",
        "RSS",
        "Opinion columns (RSS)",
        "anchor",
    )
    assert webpage.feed_links((SITE / "nofeed.html").read_bytes(), "https://s.example/") == []


def test_what_counts_as_a_web_page() -> None:
    assert webpage.looks_like_html(b"anything", "text/html; charset=utf-8")
    assert webpage.looks_like_html(b"\xef\xbb\xbf  <!-- x -->\n<!DOCTYPE html><p>", None)
    assert webpage.looks_like_html(b"<html lang=en>", "application/octet-stream")
    assert not webpage.looks_like_html(b"<?xml version='1.0'?><rss>", "text/xml")
    assert not webpage.looks_like_html(b'{"version": "x"}', "application/json")


def test_hostile_pages_are_read_within_bounds() -> None:
    # nesting deeper than libxml2 follows: the head is still read, the rest is cut off
    deep = (
        b"<html><head><link rel=alternate type=application/rss+xml href=/f.xml></head><body>"
        + b"<div>" * 100_000
        + b"</div>" * 100_000
        + b"</body></html>"
    )
    assert [link.url for link in webpage.feed_links(deep, "http://h.example/")] == [
        "http://h.example/f.xml"
    ]
    # a page of a thousand feed-like links: MAX_LINKS of them
    many = b"<html><body>" + b"".join(b"<a href='/c%d/feed/'>c</a>" % n for n in range(1000))
    assert len(webpage.feed_links(many, "http://h.example/")) == webpage.MAX_LINKS
    for junk in (b"", b"\x00\x01\x02", b"<", b"<html><link rel=alternate href='javascript:x'>"):
        assert webpage.feed_links(junk, "http://h.example/") == []
    # a run of comments before the document (a regex repeating `<!--.*?-->` never finished)
    assert not webpage.looks_like_html(b"<!---->" * 600 + b"<rss>", "application/xml")
    assert webpage.looks_like_html(b"<!-- a -->" * 300 + b"<!DOCTYPE html>", None)
    # a codec libxml2 does not know, a base that is no URL
    odd = b'<html><head><meta charset="rot13"><base href="http://[bad"><link rel=alternate '
    odd += b"type=application/rss+xml href=/f.xml></head></html>"
    assert [link.url for link in webpage.feed_links(odd, "http://h.example/")] == [
        "http://h.example/f.xml"
    ]


# -- a source whose url is a page -------------------------------------------------------------


def test_a_page_source_is_polled_at_its_feed_and_the_page_is_not_fetched_again(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    server.routes["/"] = lambda r: page("home.html")
    server.routes["/feed/"] = feed_file(rss("south", 3), etag='"1"')
    h = harness_for(config_for(server, "/"))
    first = h.poll()["south"]
    assert first.ok and first.new == 3 and first.discovered == server.url("/feed/")
    assert first.moved_to is None
    state = storage.source("south")
    assert state is not None and state.discovered and state.moved
    assert (state.url, state.fetch_url) == (server.url("/"), server.url("/feed/"))
    assert state.etag == '"1"' and state.feed_title == "south" and state.last_error is None

    clock.advance(minutes=11)
    second = h.poll()["south"]
    assert (second.ok, second.status, second.discovered) == (True, 304, None)
    assert len(server.requests_to("/")) == 1  # the page is not asked again
    assert server.requests_to("/feed/")[-1].headers["if-none-match"] == '"1"'
    assert len(server.requests_to("/comments/feed/")) == 0  # the first feed that reads wins


def test_a_dead_link_is_passed_over_for_the_next(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    server.routes["/"] = lambda r: page("home.html")
    server.routes["/comments/feed/"] = feed_file(rss("comments", 2))  # /feed/ answers 404
    result = harness_for(config_for(server, "/")).poll()["south"]
    assert result.ok and result.new == 2 and result.discovered == server.url("/comments/feed/")


def test_a_feed_found_on_a_page_that_moves_on_is_found_again(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    server.routes["/opinion/"] = lambda r: page("anchors.html")
    server.routes["/opinion/feed.rss"] = feed_file(rss("opinion", 2))
    h = harness_for(config_for(server, "/opinion/"))
    assert h.poll()["south"].discovered == server.url("/opinion/feed.rss")
    # the outlet moves its feed and its page links to the new one; the old address says 410
    del server.routes["/opinion/feed.rss"]
    server.routes["/opinion/feed.rss"] = lambda r: Reply(410, b"gone")
    moved = (SITE / "anchors.html").read_bytes().replace(b"feed.rss", b"columns.rss")
    server.routes["/opinion/"] = lambda r: Reply(200, moved, {"Content-Type": "text/html"})
    server.routes["/opinion/columns.rss"] = feed_file(rss("opinion", 3))
    clock.advance(minutes=11)
    again = h.poll()["south"]
    new_feed = server.url("/opinion/columns.rss")
    assert (again.ok, again.new, again.unchanged, again.discovered) == (True, 1, 2, new_feed)
    state = storage.source("south")
    assert state is not None and state.fetch_url == new_feed
    assert state.gone_at is None and state.discovered


def test_a_page_with_no_feed_says_so_and_what_was_tried(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    server.routes["/contact/"] = lambda r: page("nofeed.html")
    result = harness_for(config_for(server, "/contact/")).poll()["south"]
    assert not result.ok and result.kind == "parse_error"
    assert result.error is not None
    assert result.error.startswith(
        "not a readable feed: a web page that names no feed "
        '(no <link rel="alternate"> to RSS, Atom or JSON Feed), and none at the site\'s usual '
        "addresses (/feed, /rss, /rss.xml, /feed.xml, /atom.xml, /index.xml: HTTP 404 Not Found)"
    )
    tried = [p for p in webpage.COMMON_PATHS if server.requests_to(p)]
    assert tried == list(webpage.COMMON_PATHS)  # six guesses, no more
    state = storage.source("south")
    assert state is not None and not state.discovered and state.last_error == result.error


def test_a_site_that_names_no_feed_is_found_at_a_common_address(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    server.routes["/contact/"] = lambda r: page("nofeed.html")
    server.routes["/rss.xml"] = feed_file(rss("south", 1))
    result = harness_for(config_for(server, "/contact/")).poll()["south"]
    assert result.ok and result.discovered == server.url("/rss.xml")


def test_slow_links_share_one_time_budget(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    links = "".join(
        f"<link rel=alternate type=application/rss+xml href=/slow{n}.xml>" for n in range(6)
    )
    body = f"<!doctype html><html><head>{links}</head></html>".encode()
    server.routes["/"] = lambda r: Reply(200, body, {"Content-Type": "text/html"})
    for n in range(6):  # each answers an HTML page after 0.6 s: none is a feed
        server.routes[f"/slow{n}.xml"] = lambda r: Reply(200, body, delay=0.6)
    result = harness_for(config_for(server, "/", timeout="1s")).poll()["south"]
    assert not result.ok and result.kind == "parse_error"
    assert "a web page, and none of the feeds it names could be read" in (result.error or "")
    asked = sum(len(server.requests_to(f"/slow{n}.xml")) for n in range(6))
    assert 1 <= asked <= 3  # one second for them all, not one each
    assert "more not tried (out of time or tries)" in (result.error or "")


def test_a_new_url_in_feeds_yaml_forgets_the_discovered_feed(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    server.routes["/"] = lambda r: page("home.html")
    server.routes["/feed/"] = feed_file(rss("south", 1))
    harness_for(config_for(server, "/")).poll()
    config = config_for(server, "/feed/")
    storage.sync_sources(config.sources)
    state = storage.source("south")
    assert state is not None and not state.discovered and not state.moved


# -- what editors see -------------------------------------------------------------------------


def _discover(*args: str, tmp_path: Path) -> Result:
    """`aggregator discover` in this process, polite to nobody (host_gap 0s)."""
    config = tmp_path / "polite.yaml"
    config.write_text("sources: []\npolling: {host_gap: 0s}\n")
    return CliRunner().invoke(cli, ["discover", "--config", str(config), *args])


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_sources_and_poll_show_the_feed_found_with_the_yaml_to_paste(
    server: FeedServer, tmp_path: Path
) -> None:
    server.routes["/"] = lambda r: page("home.html")
    server.routes["/feed/"] = feed_file(rss("south", 2))
    (tmp_path / "feeds.yaml").write_text(
        "sections: [{id: world, title: World}]\n"
        f"sources:\n  - {{id: south, url: '{server.url('/')}', section: world}}\n"
        "polling: {host_gap: 0s}\n"
        f"storage: {{url: 'sqlite:///{tmp_path / 'a.db'}'}}\n"
    )
    polled = _cli("poll", "--once", "--config", "feeds.yaml", cwd=tmp_path)
    assert polled.returncode == 0, polled.stderr
    assert f"a web page: its feed is {server.url('/feed/')}, put that in feeds.yaml" in (
        polled.stdout
    )
    listed = _cli("sources", "--config", "feeds.yaml", cwd=tmp_path)
    assert (
        "south: its url is a web page; polling the feed it names. In feeds.yaml:\n"
        f"  - id: south\n    url: {server.url('/feed/')}    # was {server.url('/')}"
    ) in listed.stdout
    (row,) = json.loads(_cli("sources", "--json", "--config", "feeds.yaml", cwd=tmp_path).stdout)
    assert (row["discovered"], row["moved"], row["url_in_use"]) == (
        True,
        False,
        server.url("/feed/"),
    )


def test_discover_lists_a_pages_feeds_and_the_one_a_source_polls(
    server: FeedServer, tmp_path: Path
) -> None:
    server.routes["/"] = lambda r: page("home.html")
    server.routes["/comments/feed/"] = feed_file(rss("comments", 4))
    done = _discover(server.url("/"), tmp_path=tmp_path)
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        f"{server.url('/')} is a web page naming 2 feeds:",
        f"    RSS       {server.url('/feed/')}",
        "              not readable: HTTP 404 Not Found",
        f"  * RSS       {server.url('/comments/feed/')}",
        "              'Southern News » Comments Feed': rss20, 4 entries",
        "* the feed a source with this url polls",
        "In feeds.yaml:",
        "  - id: southern-news-comments-feed",
        f"    url: {server.url('/comments/feed/')}",
    ]
    report = json.loads(_discover("--json", server.url("/"), tmp_path=tmp_path).output)
    assert report["chosen"] == server.url("/comments/feed/")
    assert [(f["url"], f["readable"], f["entries"]) for f in report["feeds"]] == [
        (server.url("/feed/"), False, None),
        (server.url("/comments/feed/"), True, 4),
    ]


def test_discover_says_plainly_when_there_is_no_feed_or_the_url_is_one(
    server: FeedServer, tmp_path: Path
) -> None:
    server.routes["/contact/"] = lambda r: page("nofeed.html")
    server.routes["/feed.xml"] = feed_file(rss("south", 2))
    none = _discover(server.url("/contact/"), tmp_path=tmp_path)
    assert none.exit_code == 0
    assert none.output.splitlines()[0] == (
        f"{server.url('/contact/')} is a web page that names no feed"
        ' (no <link rel="alternate"> to RSS, Atom or JSON Feed).'
    )
    assert "No feed found" not in none.output  # the site answers at a common address
    assert f"* feed      {server.url('/feed.xml')} (a common address)" in none.output
    server.routes["/feed.xml"] = lambda r: Reply(404, b"")
    nothing = _discover(server.url("/contact/"), tmp_path=tmp_path)
    assert nothing.exit_code == 1
    assert nothing.output.splitlines()[-1] == "No feed found: this address cannot be a source."
    itself = _discover(server.url("/feed.xml"), tmp_path=tmp_path)
    assert itself.exit_code == 1 and "HTTP 404 Not Found" in itself.output
    server.routes["/feed.xml"] = feed_file(rss("south", 2))
    feed = _discover(server.url("/feed.xml"), tmp_path=tmp_path)
    assert feed.exit_code == 0
    assert feed.output.splitlines()[0] == (
        f"{server.url('/feed.xml')} is a feed (rss20, 2 entries, 'south'): use it as it is."
    )


def test_the_status_page_shows_a_page_source_with_its_feed_and_the_yaml(tmp_path: Path) -> None:
    from tests.test_ops import get, running, wait_until
    from tests.test_service import free_port

    with FeedServer() as server:
        server.routes["/"] = lambda r: page("home.html")
        server.routes["/feed/"] = feed_file(rss("south", 2))
        port = free_port()
        (tmp_path / "feeds.yaml").write_text(
            "sections: [{id: world, title: World}]\n"
            f"sources:\n  - {{id: south, url: '{server.url('/')}', section: world}}\n"
            "polling: {host_gap: 0s}\n"
            f"server: {{port: {port}}}\n"
        )
        with running(["run", "--config", "feeds.yaml"], tmp_path):
            base = f"http://127.0.0.1:{port}"

            def polled() -> bool:
                sources = json.loads(get(base + "/status.json")[2])["sources"]
                return bool(sources and sources[0]["last_success"])

            wait_until(polled)
            status, _, body = get(base + "/status")
    assert status == 200
    text = body.decode()
    assert "1 source is a web page, polled at the feed found on it." in text
    assert f"- id: south\n  url: {server.url('/feed/')}    # was {server.url('/')}" in text
    assert f"A web page: polling the feed it names, {server.url('/feed/')}" in text
    assert 'id="moved"' not in text  # not a permanent redirect


def test_a_sources_headers_go_to_its_own_host_only(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    elsewhere = server.url("/feed/").replace("127.0.0.1", "localhost")
    body = (
        (SITE / "home.html").read_bytes().replace(b'href="/feed/"', f'href="{elsewhere}"'.encode())
    )
    server.routes["/"] = lambda r: Reply(200, body, {"Content-Type": "text/html"})
    server.routes["/feed/"] = feed_file(rss("south", 1))
    text = (
        "sections: [{id: world, title: World}]\n"
        f"sources:\n  - {{id: south, url: '{server.url('/')}', section: world, "
        "headers: {X-Api-Key: s3cret}}\n"
        "polling: {host_gap: 0s}\n"
    )
    result = harness_for(load_text(text, "test.yaml", env={})).poll()["south"]
    assert result.ok and result.discovered == elsewhere
    assert server.requests_to("/")[0].headers["x-api-key"] == "s3cret"
    assert "x-api-key" not in server.requests_to("/feed/")[0].headers  # another host's
