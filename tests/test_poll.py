"""Polling end to end: a real feed server on 127.0.0.1, real storage (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from aggregator.config import Config, load_text
from aggregator.storage import Storage
from tests.feedserver import FeedServer, Reply, Request, endless, feed_file
from tests.support import Build, Clock, rss


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def make_config(server: FeedServer, *paths: str, extra: str = "") -> Config:
    sources = "".join(
        f"  - {{id: {path.strip('/').split('.')[0]}, url: '{server.url(path)}', section: world, "
        f"interval: 10m}}\n"
        for path in paths
    )
    text = (
        "sections: [{id: world, title: World}]\n"
        f"sources:\n{sources}"
        "polling: {timeout: 2s, max_size: 1MiB, host_gap: 0s, unhealthy_after: 2}\n" + extra
    )
    return load_text(text, "test.yaml", env={})


def test_new_then_not_modified_then_edited(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    server.routes["/a.xml"] = feed_file(rss("a", 3), etag='"1"')
    h = harness_for(make_config(server, "/a.xml"))
    first = h.poll()["a"]
    assert (first.ok, first.status, first.new, first.updated) == (True, 200, 3, 0)

    clock.advance(minutes=11)
    second = h.poll()["a"]
    assert (second.status, second.new, second.updated, second.unchanged) == (304, 0, 0, 0)
    assert server.requests_to("/a.xml")[-1].headers["if-none-match"] == '"1"'

    clock.advance(minutes=11)
    server.routes["/a.xml"] = feed_file(rss("a", 4, extra="(updated)"), etag='"2"')
    third = h.poll()["a"]
    assert (third.new, third.updated, third.unchanged) == (1, 3, 0)
    assert storage.count_items("a") == 4
    state = storage.source("a")
    assert state is not None and state.etag == '"2"' and state.last_entry_count == 4
    assert state.feed_title == "a"


def test_nothing_is_polled_before_it_is_due(
    server: FeedServer, clock: Clock, harness_for: Build
) -> None:
    server.routes["/a.xml"] = feed_file(rss("a", 1))
    h = harness_for(make_config(server, "/a.xml"))
    h.poll()
    clock.advance(minutes=5)
    assert h.poll() == {}
    clock.advance(minutes=7)  # 10 minutes +-10% jitter
    assert set(h.poll()) == {"a"}


def test_permanent_redirect_is_remembered(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    server.routes["/a.xml"] = lambda r: Reply(301, headers={"Location": "/moved.xml"})
    server.routes["/moved.xml"] = feed_file(rss("a", 2))
    h = harness_for(make_config(server, "/a.xml"))
    result = h.poll()["a"]
    assert result.ok and result.moved_to == server.url("/moved.xml")
    state = storage.source("a")
    assert state is not None and state.moved and state.fetch_url == server.url("/moved.xml")
    clock.advance(minutes=11)
    h.poll()
    assert len(server.requests_to("/a.xml")) == 1  # the old address is not asked again
    assert len(server.requests_to("/moved.xml")) == 2


def test_temporary_redirect_keeps_the_configured_url(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    server.routes["/a.xml"] = lambda r: Reply(302, headers={"Location": "/elsewhere.xml"})
    server.routes["/elsewhere.xml"] = feed_file(rss("a", 2))
    h = harness_for(make_config(server, "/a.xml"))
    assert h.poll()["a"].new == 2
    state = storage.source("a")
    assert state is not None and not state.moved


def test_gone_stops_polling_and_says_why(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    server.routes["/a.xml"] = lambda r: Reply(410, b"gone")
    h = harness_for(make_config(server, "/a.xml"))
    result = h.poll()["a"]
    assert not result.ok and result.error == (
        "HTTP 410 Gone: the publisher removed this feed; polling stopped"
    )
    clock.advance(days=30)
    assert h.poll() == {}
    state = storage.source("a")
    assert state is not None and state.gone_at is not None


@pytest.mark.parametrize(
    ("status", "step"),
    [
        (503, timedelta(minutes=2)),  # what often passes: from polling.first_retry
        (404, timedelta(minutes=10)),  # what retrying soon would not change: the interval
    ],
)
def test_failures_back_off_exponentially(
    server: FeedServer,
    storage: Storage,
    clock: Clock,
    harness_for: Build,
    status: int,
    step: timedelta,
) -> None:
    server.routes["/a.xml"] = lambda r: Reply(status, b"down")
    h = harness_for(make_config(server, "/a.xml"))
    waits = []
    for _ in range(4):
        result = h.poll("a")["a"]
        assert result.error is not None and result.error.startswith(f"HTTP {status}")
        state = storage.source("a")
        assert state is not None
        waits.append((state.next_due_at - clock.now) / step)
    expected = [1, 2, 4, 8]  # doubling, each with at most 10% jitter
    assert all(abs(w / e - 1) <= 0.1 for w, e in zip(waits, expected, strict=True)), waits
    state = storage.source("a")
    assert state is not None and state.consecutive_failures == 4


def test_a_source_that_refuses_connections_is_retried_in_minutes(
    storage: Storage, clock: Clock, harness_for: Build
) -> None:
    """A newcomer offline, or a blip: the first retry comes in about two minutes, not after the
    source's interval (an hour in the shipped config for some)."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = load_text(
        "sections: [{id: world, title: World}]\nsources:\n"
        f"  - {{id: a, url: 'http://127.0.0.1:{port}/a.xml', section: world, interval: 1h}}\n",
        "test.yaml",
        env={},
    )
    result = harness_for(config).poll("a")["a"]
    assert result.kind == "network_error" and "refused the connection" in (result.error or "")
    state = storage.source("a")
    assert state is not None
    assert timedelta(minutes=1.8) <= state.next_due_at - clock.now <= timedelta(minutes=2.2)


def test_retry_after_is_honoured(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    server.routes["/a.xml"] = lambda r: Reply(429, b"slow down", {"Retry-After": "7200"})
    h = harness_for(make_config(server, "/a.xml"))
    assert h.poll()["a"].error == "HTTP 429 Too Many Requests"
    state = storage.source("a")
    assert state is not None and state.next_due_at - clock.now >= timedelta(hours=2)


def test_ttl_and_cache_control_are_floors(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    with_ttl = rss("a", 1).replace(b"<description>d</description>", b"<ttl>60</ttl>")
    server.routes["/a.xml"] = feed_file(with_ttl)
    server.routes["/b.xml"] = lambda r: Reply(200, rss("b", 1), {"Cache-Control": "max-age=5400"})
    h = harness_for(make_config(server, "/a.xml", "/b.xml"))
    h.poll()
    a, b = storage.source("a"), storage.source("b")
    assert a is not None and a.next_due_at - clock.now >= timedelta(minutes=60)
    assert b is not None and b.next_due_at - clock.now >= timedelta(minutes=90)


def test_one_bad_source_does_not_stop_the_others(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    server.routes["/stall.xml"] = lambda r: Reply(200, rss("stall", 1), delay=4.0)
    server.routes["/huge.xml"] = lambda r: Reply(200, endless())
    server.routes["/broken.xml"] = lambda r: Reply(
        200, b"<html><body>Oops</body></html>", {"Content-Type": "text/html"}
    )
    server.routes["/fine.xml"] = feed_file(rss("fine", 2))
    h = harness_for(make_config(server, "/stall.xml", "/huge.xml", "/broken.xml", "/fine.xml"))
    results = h.poll()
    assert results["stall"].error == "timed out after 2s"
    assert results["huge"].error == ("the feed is larger than the limit of 1,048,576 bytes (more)")
    assert results["broken"].error == (  # an HTML page, naming no feed (tests/test_discover.py)
        'not a readable feed: a web page that names no feed (no <link rel="alternate"> to RSS, '
        "Atom or JSON Feed), and none at the site's usual addresses (/feed, /rss, /rss.xml, "
        "/feed.xml, /atom.xml, /index.xml: HTTP 404 Not Found)"
    )
    assert results["fine"].ok and results["fine"].new == 2
    stall = storage.source("stall")
    assert stall is not None and stall.last_error == "timed out after 2s"


def test_a_malformed_feed_with_entries_is_kept_with_a_warning(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    server.routes["/a.xml"] = feed_file(rss("a", 2).replace(b"</channel></rss>", b"<item>"))
    h = harness_for(make_config(server, "/a.xml"))
    result = h.poll()["a"]
    assert result.ok and result.new == 2 and result.warning is not None
    assert result.warning.startswith("malformed feed, read anyway: line 1, column")
    state = storage.source("a")
    assert state is not None and state.last_warning == result.warning


def test_json_feed(server: FeedServer, storage: Storage, harness_for: Build) -> None:
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "items": [
            {
                "id": "1",
                "url": "/posts/1",
                "title": "First",
                "content_html": "<p>Hi</p>",
                "date_published": "2026-11-20T10:00:00+02:00",
                "authors": [{"name": "Ann"}],
            },
            {"id": 2, "content_text": "Second <plain> text", "tags": ["x"]},
        ],
    }
    server.routes["/j.json"] = feed_file(json.dumps(document).encode(), "application/feed+json")
    h = harness_for(make_config(server, "/j.json"))
    assert h.poll()["j"].new == 2
    first, second = sorted(storage.recent_items(10, "j"), key=lambda i: i.entry.key)
    assert first.entry.link == server.url("/posts/1") and first.entry.authors == ("Ann",)
    assert first.entry.published is not None and first.entry.published.hour == 8
    assert second.entry.content == "Second &lt;plain&gt; text" and second.entry.categories == ("x",)


def test_a_wrong_charset_header_does_not_garble_text(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    body = rss("a", 1).replace(b"a story 0", "Türkiye\u2019s story".encode())
    server.routes["/a.xml"] = lambda r: Reply(
        200, body, {"Content-Type": "text/xml; charset=iso-8859-1"}
    )
    h = harness_for(make_config(server, "/a.xml"))
    assert h.poll()["a"].ok
    [item] = storage.recent_items(1, "a")
    assert item.entry.title == "Türkiye\u2019s story"


def test_named_sources_are_polled_even_when_not_due(
    server: FeedServer, clock: Clock, harness_for: Build
) -> None:
    server.routes["/a.xml"] = feed_file(rss("a", 1))
    server.routes["/b.xml"] = feed_file(rss("b", 1))
    h = harness_for(make_config(server, "/a.xml", "/b.xml"))
    h.poll()
    assert set(h.poll("b")) == {"b"}


def test_the_story_index_is_loaded_only_when_a_poll_has_entries_to_link(
    server: FeedServer, clock: Clock, harness_for: Build
) -> None:
    """A restarted poller whose feeds all answer 304 never loads the story index (250,000
    items' fingerprints take seconds); the first new entries load it before they are linked."""
    words = "officials met in cairo today to talk about the ceasefire and the aid convoys"
    server.routes["/a.xml"] = feed_file(rss("a", 3, extra=words), etag='"1"')
    config = make_config(server, "/a.xml", extra="dedupe: {window: 60d}\n")  # the feed's dates
    harness_for(config).poll()
    restarted = harness_for(config)
    index = restarted.poller.processor.index
    assert index is not None and len(index) == 0
    clock.advance(minutes=11)
    assert restarted.poll()["a"].status == 304
    assert len(index) == 0  # nothing to link: nothing loaded
    clock.advance(minutes=11)
    server.routes["/a.xml"] = feed_file(rss("a", 4, extra=words), etag='"2"')
    assert restarted.poll()["a"].new == 1
    assert len(index) == 4  # the three stored before, then the new one


def test_not_modified_outcomes_are_stored_together_and_a_lost_lease_spoils_only_its_own(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    """304s and failures are written in batches by one thread: the source whose lease another
    worker took meanwhile writes nothing and says so; the others in its batch are stored."""
    for name in ("a", "b", "c"):
        server.routes[f"/{name}.xml"] = feed_file(rss(name, 2), etag=f'"{name}"')
    server.routes["/d.xml"] = lambda _request: Reply(503, b"busy")
    config = make_config(server, "/a.xml", "/b.xml", "/c.xml", "/d.xml")
    h = harness_for(config)
    h.poll()
    clock.advance(minutes=11)
    not_modified = server.routes["/b.xml"]

    def taken_meanwhile(request: Request) -> Reply:
        # another worker takes b's lease while its fetch is on the wire (as after a stall)
        with storage._engine.begin() as conn:
            conn.execute(text("UPDATE sources SET lease_owner = 'thief' WHERE id = 'b'"))
        return not_modified(request)

    server.routes["/b.xml"] = taken_meanwhile
    results = h.poll()
    assert {sid: (r.status, r.lost_lease) for sid, r in results.items()} == {
        "a": (304, False),
        "b": (304, True),
        "c": (304, False),
        "d": (503, False),
    }
    b = storage.source("b")
    assert b is not None and b.lease_owner == "thief"
    for sid in ("a", "c"):
        state = storage.source(sid)
        assert state is not None and state.last_status == 304 and state.lease_owner is None
    d = storage.source("d")
    assert d is not None and d.consecutive_failures == 2  # once in each poll
