"""Edge cases a review of the publishing code found, each kept by a test (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from aggregator.config import Config, Filter, Output, Publishing, Section, Server, Source
from aggregator.exceptions import BadRequestError
from aggregator.feed.parse import parse_document
from aggregator.process.pipeline import Processor
from aggregator.publish import publisher as publisher_module
from aggregator.publish.export import export
from aggregator.publish.publisher import Publisher
from aggregator.storage import Storage
from aggregator.types import FetchRecord
from tests.publishing import BASE, WIRE, entry, fill, newsroom
from tests.support import Clock


def _setup(storage: Storage, config: Config) -> Processor:
    storage.sync_sources(config.sources)
    return Processor(config)


def _items(publisher: Publisher, output: str = "all", before: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(publisher.feed("feeds", output, "json", before).body)["items"]  # type: ignore[no-any-return]


def test_script_links_never_reach_a_page_or_feed(storage: Storage, clock: Clock) -> None:
    config = newsroom()
    processor = _setup(storage, config)
    hostile = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://h/</link>'
        b"<description>d</description><item><title>Click me</title>"
        b"<link>javascript:alert(document.domain)</link>"
        b'<enclosure url="javascript:alert(2)" type="audio/mpeg" length="1"/>'
        b"<description>x</description></item></channel></rss>"
    )
    parsed = parse_document(hostile, "https://herald.example/rss", clock.now)
    assert parsed.entries[0].link is None and parsed.entries[0].enclosures == ()
    storage.save_entries("herald", parsed.entries, processor)
    # and as if something else had put them in the database
    storage.save_entries(
        "wire",
        [entry("j", "Click me", WIRE, link="javascript:alert(1)", image="data:text/html,x")],
        processor,
    )
    storage.save_entries(
        "herald", [entry("k", "Copy", WIRE, link="JavaScript:alert(3)")], processor
    )
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    documents = [publisher.page("feeds", "all").body, publisher.page("feeds", "copies").body]
    documents += [
        publisher.feed("feeds", o, f).body
        for o in ("all", "copies")
        for f in ("atom", "rss", "json")
    ]
    for body in documents:
        assert b"javascript:" not in body.lower() and b"data:text" not in body


@pytest.mark.parametrize(
    "cursor", ["\u00b2.1", "1.\u0661", "1.9223372036854775808", "1.99999999999999999999", "١.١"]
)
def test_odd_cursors_are_bad_requests(storage: Storage, clock: Clock, cursor: str) -> None:
    publisher = Publisher(storage, newsroom(), clock=clock, refresh=0)
    with pytest.raises(BadRequestError):
        publisher.feed("feeds", "all", "atom", cursor)


def test_equal_cursors_share_one_document_and_links_are_canonical(
    storage: Storage, clock: Clock
) -> None:
    config = newsroom(limit=2)
    processor = _setup(storage, config)
    fill(storage, processor)
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    first = json.loads(publisher.feed("feeds", "all", "json").body)
    cursor = first["next_url"].split("before=")[1]
    micros, item_id = cursor.split(".")
    padded = publisher.feed("feeds", "all", "json", f"000{micros}.00{item_id}")
    assert padded is publisher.feed("feeds", "all", "json", cursor)
    assert json.loads(padded.body)["feed_url"].endswith(f"before={cursor}")


def test_last_modified_moves_when_an_entry_drops_out(storage: Storage, clock: Clock) -> None:
    config = Config(
        sections=(Section("world", "World"),),
        sources=(Source("herald", "https://herald.example/rss", "world"),),
        outputs=(Output("recent", "Recent", filter=Filter(max_age=timedelta(days=2))),),
    )
    processor = _setup(storage, config)
    now = clock.now
    storage.save_entries(
        "herald",
        [
            entry("a", "Old", "<p>a</p>", published=now - timedelta(days=1)),
            entry("b", "New", "<p>b</p>", published=now - timedelta(hours=1)),
        ],
        processor,
    )
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    before = publisher.feed("feeds", "recent", "atom")
    assert before.last_modified is not None and before.last_modified <= now
    clock.advance(days=1, hours=1)
    after = publisher.feed("feeds", "recent", "atom")
    assert after.etag != before.etag
    assert after.last_modified is not None and after.last_modified > before.last_modified


def test_a_future_date_never_pushes_last_modified_past_now(storage: Storage, clock: Clock) -> None:
    config = newsroom()
    processor = _setup(storage, config)
    storage.save_entries(
        "herald",
        [entry("f", "Soon", "<p>x</p>", published=clock.now + timedelta(minutes=50))],
        processor,
    )
    document = Publisher(storage, config, clock=clock, refresh=0).feed("feeds", "all", "atom")
    assert document.last_modified is not None and document.last_modified <= clock.now


def test_an_empty_feed_is_dated_when_publishing_started_not_1970(
    storage: Storage, clock: Clock
) -> None:
    """A feed with nothing in it still carries a date (Atom's updated, RSS's lastBuildDate):
    when this publisher started, the same on every request so its ETag holds."""
    config = newsroom()
    _setup(storage, config)
    started = clock.now
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    clock.advance(hours=3)
    atom = publisher.feed("feeds", "all", "atom")
    assert b"<entry" not in atom.body
    assert f"<updated>{started.isoformat()}</updated>".encode() in atom.body
    assert b"1970" not in atom.body
    rss = publisher.feed("feeds", "all", "rss").body
    assert b"<lastBuildDate>Tue, 24 Nov 2026 12:00:00 +0000</lastBuildDate>" in rss
    assert b"1970" not in rss
    clock.advance(minutes=5)
    assert publisher.feed("feeds", "all", "atom").etag == atom.etag


def test_a_sources_own_title_shows_as_soon_as_its_items_do(storage: Storage, clock: Clock) -> None:
    config = Config(
        sections=(Section("world", "World"),),
        sources=(Source("blog", "https://blog.example/atom", "world"),),  # no title in YAML
        outputs=(Output("all", "All"),),
        server=Server(base_url=BASE),
    )
    processor = _setup(storage, config)
    running = Publisher(storage, config, clock=clock, refresh=0)
    assert _items(running) == []
    storage.record_fetch(
        FetchRecord(
            "blog", clock.now, clock.now + timedelta(minutes=15), 200, feed_title="The Blog"
        ),
        [entry("p1", "First post", "<p>x</p>")],
        filer=processor,
    )
    restarted = Publisher(storage, config, clock=clock, refresh=0)
    assert running.feed("feeds", "all", "atom").body == restarted.feed("feeds", "all", "atom").body
    assert _items(running)[0]["_aggregator"]["source"]["title"] == "The Blog"


def test_a_story_keeps_its_id_when_its_first_item_is_pruned(storage: Storage, clock: Clock) -> None:
    config = newsroom()
    processor = _setup(storage, config)
    storage.save_entries("herald", [entry("hw", "Gaza truce talks stall", WIRE)], processor)
    clock.advance(hours=1)
    storage.save_entries(
        "wire", [entry("w1", "Gaza ceasefire talks hit snag", WIRE + " More.")], processor
    )
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    [story] = _items(publisher)
    clock.advance(days=10)  # the herald dropped the item from its feed; the wire still lists it
    storage.save_entries(
        "wire", [entry("w1", "Gaza ceasefire talks hit snag", WIRE + " More.")], processor
    )
    assert storage.prune_items(timedelta(days=5)) == 1
    [after] = _items(publisher)
    assert after["id"] == story["id"] and after["title"] == story["title"]
    assert after["_aggregator"]["also_reported_by"] == []


def test_unmerging_the_first_item_leaves_no_two_entries_with_one_id(
    storage: Storage, clock: Clock
) -> None:
    config = newsroom()
    processor = _setup(storage, config)
    first = storage.save_entries("herald", [entry("hw", "Gaza truce talks stall", WIRE)], processor)
    storage.save_entries(
        "wire", [entry("w1", "Gaza ceasefire talks hit snag", WIRE + " More.")], processor
    )
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    [story] = _items(publisher)
    storage.detach_item(first.new[0])
    after = {i["title"]: i["id"] for i in _items(publisher)}
    assert len(after) == 2 and len(set(after.values())) == 2
    assert after["Gaza truce talks stall"] == story["id"]  # the opener keeps its id


def test_story_ids_and_item_ids_never_coincide(storage: Storage, clock: Clock) -> None:
    config = newsroom()
    fill(storage, _setup(storage, config))
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    stories = {i["id"] for i in _items(publisher, "all")}
    copies = {i["id"] for i in _items(publisher, "copies")}
    assert len(copies) == len(stories) + 1 and stories.isdisjoint(copies)


def test_a_copy_ageing_out_between_page_fetches_does_not_repeat_its_story(
    storage: Storage, clock: Clock
) -> None:
    config = Config(
        sections=(Section("world", "World"),),
        sources=(
            Source("a", "https://a.example/f", "world"),
            Source("b", "https://b.example/f", "world"),
        ),
        outputs=(Output("recent", "Recent", filter=Filter(max_age=timedelta(days=1)), limit=2),),
        server=Server(base_url=BASE),
    )
    processor = _setup(storage, config)
    start = clock.now
    link = "https://n.example/s"
    storage.save_entries(
        "a", [entry("y", "S from a", "<p>S</p>", link=link, published=start)], processor
    )
    clock.advance(minutes=30)
    storage.save_entries(
        "a", [entry("o1", "Other 1", "<p>one</p>", published=clock.now)], processor
    )
    clock.advance(minutes=30)  # b's copy is seen later but was published two hours earlier
    old = start - timedelta(hours=2)
    storage.save_entries(
        "b", [entry("x", "S from b", "<p>S</p>", link=link, published=old)], processor
    )
    clock.advance(minutes=1)
    storage.save_entries(
        "a", [entry("o2", "Other 2", "<p>two</p>", published=clock.now)], processor
    )
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    clock.now = start + timedelta(hours=21, minutes=59)
    first = json.loads(publisher.feed("feeds", "recent", "json").body)
    clock.now = start + timedelta(hours=22, minutes=1)  # b's copy passes the maximum age
    second = _items(publisher, "recent", first["next_url"].split("before=")[1])
    ids = [i["id"] for i in first["items"]] + [i["id"] for i in second]
    assert len(ids) == len(set(ids))


def test_a_first_poll_is_published_newest_first(storage: Storage, clock: Clock) -> None:
    config = newsroom()
    processor = _setup(storage, config)
    entries = [
        entry(
            f"n{n}", f"Published {n}h ago", f"<p>{n}</p>", published=clock.now - timedelta(hours=n)
        )
        for n in range(4)
    ]
    storage.save_entries("herald", entries, processor)  # as a feed lists them: newest first
    titles = [i["title"] for i in _items(Publisher(storage, config, clock=clock, refresh=0))]
    assert titles == [f"Published {n}h ago" for n in range(4)]


def test_deep_archive_pages_point_back_to_the_first(
    storage: Storage, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "PREVIOUS_WALK", 2)
    config = newsroom(limit=1)
    processor = _setup(storage, config)
    for n in range(6):
        clock.advance(minutes=1)
        storage.save_entries(
            "herald", [entry(f"d{n}", f"Deep {n}", f"<p>{n} {'y' * n}</p>")], processor
        )
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    cursors: list[str] = []
    document = json.loads(publisher.feed("feeds", "all", "json").body)
    while "next_url" in document:
        cursors.append(document["next_url"].split("before=")[1])
        document = json.loads(publisher.feed("feeds", "all", "json", cursors[-1]).body)
    views = [publisher.view(publisher.publication("feeds", "all"), c) for c in cursors]
    assert views[0].previous == "" and views[1].previous == cursors[0]
    assert views[4].previous == ""  # past the walk: the first page, as documented


def test_export_through_a_symlink_updates_its_target(
    storage: Storage, clock: Clock, tmp_path: Path
) -> None:
    config = newsroom()
    fill(storage, _setup(storage, config))
    target = tmp_path / "releases" / "site"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    link = tmp_path / "public"
    link.symlink_to(target)
    export(Publisher(storage, config, paged=False), link)
    assert link.is_symlink() and (link / "feeds" / "all.atom").is_file()
    assert not (target / "old.txt").exists()
    assert [p.name for p in (tmp_path / "releases").iterdir()] == ["site"]


def test_publishing_switches_are_honoured(storage: Storage, clock: Clock) -> None:
    config = newsroom(section_feeds=False, topic_feeds=False, title="Daily Wire")
    fill(storage, _setup(storage, config))
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    assert {p.kind.value for p in publisher.catalog} == {"feeds"}
    assert b"<name>Daily Wire</name>" in publisher.feed("feeds", "all", "atom").body
    assert isinstance(Publishing().cache_max_age, timedelta)
