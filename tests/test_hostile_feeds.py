"""Bad values inside feeds, polled from a real server into real storage: one bad field is
dropped or clamped with a warning on the source, and the item and its neighbours are kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from aggregator.storage import Storage
from tests.feedserver import FeedServer, Reply, feed_file
from tests.support import Build, Clock
from tests.test_poll import make_config

ATOM = "application/atom+xml"
JSON = "application/feed+json"


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def _atom(*entries: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<title>Hostile</title><id>urn:x</id><updated>2026-11-20T00:00:00Z</updated>"
        + "".join(entries)
        + "</feed>"
    ).encode()


def _entry(n: int, updated: str = "2026-11-20T09:00:00Z", title: str = "") -> str:
    return (
        f"<entry><id>urn:e:{n}</id><title>{title or f'Entry {n}'}</title>"
        f'<link href="https://hostile.example/{n}"/><updated>{updated}</updated></entry>'
    )


def _json(*items: str, version: str = '"https://jsonfeed.org/version/1.1"') -> bytes:
    return (f'{{"version": {version}, "title": "J", "items": [' + ",".join(items) + "]}").encode()


def _titles(storage: Storage, source: str) -> set[str]:
    return {item.entry.title for item in storage.recent_items(100, source)}


def test_an_out_of_range_date_drops_the_date_not_the_item(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    server.routes["/atom.xml"] = feed_file(
        _atom(_entry(1, "0001-01-01T00:00:00+05:00"), _entry(2)), ATOM
    )
    year_one = '{"id": "1", "title": "Year one", "date_published": "0001-01-01T00:00:00+05:00"}'
    server.routes["/json.json"] = feed_file(_json(year_one, '{"id": "2", "title": "Fine"}'), JSON)
    results = harness_for(make_config(server, "/atom.xml", "/json.json")).poll()
    assert results["atom"].ok and results["atom"].new == 2
    assert "1 date before 1900 or in the future ignored" in (results["atom"].warning or "")
    assert results["json"].ok and results["json"].new == 2
    assert results["json"].warning == (
        "unreadable date_published '0001-01-01T00:00:00+05:00' ignored"
    )
    assert _titles(storage, "json") == {"Year one", "Fine"}
    state = storage.source("json")
    assert state is not None and state.last_warning == results["json"].warning
    [dated] = [i for i in storage.recent_items(10, "atom") if i.entry.title == "Entry 1"]
    assert dated.entry.published is None  # dated from when it was first seen


def test_a_date_nobody_can_read_is_said_on_the_source(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    """A 2019 post whose date cannot be read would otherwise show up as today's, silently: the
    source carries a warning naming the date, by either parser (the fast one reads this RSS;
    feedparser reads the second, which is malformed)."""
    rss = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Dates</title>'
        "<item><title>Old post</title><link>https://dates.example/old</link>"
        "<pubDate>sometime in spring 2019</pubDate></item>"
        "<item><title>Fine</title><link>https://dates.example/fine</link>"
        "<pubDate>Fri, 20 Nov 2026 09:00:00 GMT</pubDate></item></channel></rss>"
    )
    server.routes["/rss.xml"] = feed_file(rss.encode(), "application/rss+xml")
    server.routes["/broken.xml"] = feed_file(
        rss.replace("</channel>", "<oops></channel>").encode(), "application/rss+xml"
    )
    results = harness_for(make_config(server, "/rss.xml", "/broken.xml")).poll()
    for source in ("rss", "broken"):
        assert results[source].ok and results[source].new == 2
        said = "unreadable published date 'sometime in spring 2019' ignored"
        assert said in (results[source].warning or ""), results[source].warning
        state = storage.source(source)
        assert state is not None and said in (state.last_warning or "")
        [old] = [i for i in storage.recent_items(10, source) if i.entry.title == "Old post"]
        assert old.entry.published is None  # dated from when it was first seen


def test_deep_json_long_numbers_and_long_languages_are_survived(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    deep = '{"id": "deep", "title": "Deep", "_ext": ' + "[" * 100_000 + "]" * 100_000 + "}"
    long_id = '{"id": ' + "9" * 5000 + ', "title": "Long id", "attachments": [{"url": '
    long_id += '"https://h.example/a.mp3", "size_in_bytes": ' + "9" * 40 + "}]}"
    language = '{"id": "lang", "title": "Language", "language": "' + "x" * 300 + '"}'
    server.routes["/j.json"] = feed_file(_json(deep, long_id, language), JSON)
    h = harness_for(make_config(server, "/j.json"))
    result = h.poll()["j"]
    assert result.ok and result.new == 3, result
    assert "values nested more than 32 levels deep were ignored" in (result.warning or "")
    items = {i.entry.title: i.entry for i in storage.recent_items(10, "j")}
    assert set(items) == {"Deep", "Long id", "Language"}
    assert items["Long id"].key.startswith("sha256:") and len(items["Long id"].key) < 100
    assert items["Long id"].enclosures[0].length is None
    assert items["Language"].language is None
    # polled again: the same keys, nothing new
    assert h.poll("j")["j"].new == 0


def test_a_huge_retry_after_is_clamped_not_an_internal_error(
    server: FeedServer, storage: Storage, clock: Clock, harness_for: Build
) -> None:
    server.routes["/busy.xml"] = lambda r: Reply(503, b"", {"Retry-After": "9" * 20})
    server.routes["/age.xml"] = lambda r: Reply(
        200, _atom(_entry(1)), {"Cache-Control": "max-age=" + "9" * 30, "Age": "9" * 25}
    )
    results = harness_for(make_config(server, "/busy.xml", "/age.xml")).poll()
    assert results["busy"].kind == "http_error" and results["busy"].error.startswith("HTTP 503")  # type: ignore[union-attr]
    assert results["age"].ok
    for name in ("busy", "age"):
        state = storage.source(name)
        assert state is not None
        assert clock.now < state.next_due_at <= clock.now + timedelta(hours=24, minutes=1)


def test_control_characters_never_reach_storage(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    server.routes["/c.xml"] = feed_file(
        _atom(_entry(1, title="Bell\x08 and\x1b escape"), _entry(2)), ATOM
    )
    server.routes["/j.json"] = feed_file(
        _json('{"id": "1", "title": "Nul\\u0000 and \\u0007bell", "summary": "a\\u0008b"}'), JSON
    )
    results = harness_for(make_config(server, "/c.xml", "/j.json")).poll()
    assert results["c"].ok and results["j"].ok
    assert _titles(storage, "c") == {"Bell and escape", "Entry 2"}
    [item] = storage.recent_items(10, "j")
    assert item.entry.title == "Nul and bell" and item.entry.summary == "ab"


@pytest.mark.parametrize(
    "version",
    [
        '"http://jsonfeed.org/version/1"',
        '"1.0"',
        '"1.1"',
        "1.1",
        '"https://jsonfeed.org/version/1.1/"',
    ],
)
def test_json_feed_versions_written_loosely_are_read(
    server: FeedServer, storage: Storage, harness_for: Build, version: str
) -> None:
    server.routes["/j.json"] = feed_file(_json('{"id": "1", "title": "One"}', version=version))
    result = harness_for(make_config(server, "/j.json")).poll()["j"]
    assert result.ok and result.new == 1


def test_a_json_document_that_is_not_a_feed_is_still_refused(
    server: FeedServer, harness_for: Build
) -> None:
    server.routes["/j.json"] = feed_file(_json('{"id": "1"}', version='"2.0"'), JSON)
    result = harness_for(make_config(server, "/j.json")).poll()["j"]
    assert result.kind == "parse_error" and "without a JSON Feed version" in (result.error or "")


def test_different_posts_sharing_guid_and_link_are_all_kept_once(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    shared = "<guid>https://s.example/post</guid><link>https://s.example/post</link>"
    items = [
        f"<item>{shared}<title>Newest</title><description>c</description></item>",
        f"<item>{shared}<title>Middle</title><description>b</description></item>",
        f"<item>{shared}<title>Oldest</title><description>a</description></item>",
        f"<item>{shared}<title>Oldest</title><description>a</description></item>",  # a repeat
    ]
    body = f'<rss version="2.0"><channel><title>S</title>{"".join(items)}</channel></rss>'
    server.routes["/s.xml"] = feed_file(body.encode())
    h = harness_for(make_config(server, "/s.xml"))
    assert h.poll()["s"].new == 3
    assert _titles(storage, "s") == {"Newest", "Middle", "Oldest"}
    assert h.poll("s")["s"].new == 0  # keys are stable from poll to poll


@pytest.mark.parametrize("body", [b"", b"  \r\n"])
def test_an_empty_body_is_an_empty_document_not_an_internal_error(
    server: FeedServer, storage: Storage, harness_for: Build, body: bytes
) -> None:
    server.routes["/e.xml"] = lambda r: Reply(200, body, {"Content-Type": "application/rss+xml"})
    result = harness_for(make_config(server, "/e.xml")).poll()["e"]
    assert result.kind == "parse_error"
    assert result.error == "empty document: the server answered with no content"


def test_keys_and_links_too_long_for_an_index_are_stored_on_every_database(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    # 990 CJK characters are 2,970 bytes: past PostgreSQL's 2,704-byte btree row as a key; a
    # 3,900-character link is past it as a canonical link. Either failed the whole feed there.
    guid = "".join(chr(0x4E00 + n % 2000) for n in range(990))
    link = "https://long.example/" + "a" * 3_900
    items = (
        f"<item><guid>{guid}</guid><title>Wide key</title></item>"
        f"<item><guid>long-link</guid><link>{link}</link><title>Long link</title></item>"
        "<item><guid>plain</guid><title>Plain</title></item>"
    )
    body = f'<rss version="2.0"><channel><title>L</title>{items}</channel></rss>'
    server.routes["/l.xml"] = feed_file(body.encode())
    h = harness_for(make_config(server, "/l.xml"))
    result = h.poll()["l"]
    assert result.ok and result.new == 3, result
    stored = {i.entry.title: i.entry for i in storage.recent_items(10, "l")}
    assert stored["Wide key"].key.startswith("sha256:")
    assert stored["Long link"].link == link and stored["Long link"].canonical_link is None
    assert h.poll("l")["l"].new == 0


def test_posts_sharing_guid_and_link_keep_their_keys_through_edits_and_reordering(
    server: FeedServer, storage: Storage, harness_for: Build
) -> None:
    shared = "<guid>same</guid><link>https://same.example/</link>"

    def feed(*items: tuple[str, str]) -> bytes:
        body = "".join(
            f"<item>{shared}<title>{title}</title><description>{text}</description>"
            "<pubDate>Tue, 24 Nov 2026 10:00:00 GMT</pubDate></item>"
            for title, text in items
        )
        return f'<rss version="2.0"><channel><title>S</title>{body}</channel></rss>'.encode()

    server.routes["/s.xml"] = feed_file(feed(("One", "a"), ("Two", "b")))
    h = harness_for(make_config(server, "/s.xml"))
    assert h.poll()["s"].new == 2
    server.routes["/s.xml"] = feed_file(feed(("Two", "b, edited"), ("One", "a")))
    again = h.poll("s")["s"]
    assert again.new == 0 and again.updated == 1
    assert storage.count_items("s") == 2
