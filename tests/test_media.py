"""Media in what we publish: a podcast's audio and a video's file as players and download links on
the pages and in the digest, and kept (with the item's picture as a Media RSS thumbnail) in the
Atom, RSS and JSON Feed documents, which read back to the same enclosures and picture."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from aggregator.config import Config
from aggregator.digest.compose import compose
from aggregator.digest.periods import Period
from aggregator.digest.render import render_digest
from aggregator.feed.parse import parse_document
from aggregator.process.pipeline import Processor
from aggregator.publish.publisher import Publisher
from aggregator.publish.view import Media, media_of
from aggregator.storage import Storage
from aggregator.types import Enclosure
from tests.feedchecks import atom_problems, json_feed_problems
from tests.publishing import BASE, START, entry, newsroom
from tests.support import Clock

ATOM = "{http://www.w3.org/2005/Atom}"
MEDIA = "{http://search.yahoo.com/mrss/}"
EPISODE = Enclosure("https://pod.example/e12.mp3", "audio/mpeg", 24_130_000)
CLIP = Enclosure("https://video.example/clip.webm", "", None)
PICTURE = "https://pod.example/e12-cover.jpg"


@pytest.fixture
def config() -> Config:
    return newsroom()


@pytest.fixture
def publisher(storage: Storage, config: Config, clock: Clock) -> Publisher:
    processor = Processor(config)
    storage.sync_sources(config.sources)
    storage.save_entries(
        "herald",
        [
            entry(
                "pod12",
                "Episode 12: the long road to a ceasefire",
                "<p>Our correspondents on the Gaza talks.</p>",
                published=START,
                enclosures=(EPISODE,),
                image=PICTURE,
            ),
            entry(
                "clip",
                "Watch: convoys at Rafah",
                "<p>Aid trucks wait.</p>",
                published=START + timedelta(hours=1),
                enclosures=(CLIP, Enclosure("https://video.example/still.jpg", "image/jpeg")),
            ),
        ],
        processor,
    )
    return Publisher(storage, config, clock=clock, refresh=0)


def test_enclosures_are_told_apart_and_labelled_as_people_read_them() -> None:
    assert media_of(EPISODE) == Media(EPISODE.url, "audio", "audio/mpeg", "MP3, 24.1 MB")
    assert media_of(CLIP) == Media(CLIP.url, "video", "", "WEBM")  # by its address alone
    assert media_of(Enclosure("https://x.example/report", "application/pdf", 812_000)) == Media(
        "https://x.example/report", "file", "application/pdf", "PDF, 812 KB"
    )


def test_pages_show_a_player_a_download_link_and_the_picture(publisher: Publisher) -> None:
    page = publisher.page("feeds", "copies").body.decode()
    assert f'<audio controls preload="none" src="{EPISODE.url}"></audio>' in page
    assert (
        f'<a href="{EPISODE.url}" type="audio/mpeg" download>Download the audio (MP3, 24.1 MB)</a>'
    ) in page
    assert f'<video controls preload="none" src="{CLIP.url}"></video>' in page
    assert f'<img class="thumb" src="{PICTURE}" alt="" loading="lazy"' in page
    # an image enclosure is a picture, not something to download
    assert "Download the file" not in page and 'still.jpg" download' not in page


def test_published_feeds_keep_enclosures_and_the_picture_and_read_back_the_same(
    publisher: Publisher,
) -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    atom = publisher.feed("feeds", "copies", "atom").body
    doc = etree.fromstring(atom)
    assert atom_problems(doc) == []
    episode = next(
        e for e in doc.iter(f"{ATOM}entry") if "Episode 12" in (e.findtext(f"{ATOM}title") or "")
    )
    enclosure = next(link for link in episode.iter(f"{ATOM}link") if link.get("rel") == "enclosure")
    assert (enclosure.get("href"), enclosure.get("type"), enclosure.get("length")) == (
        EPISODE.url,
        "audio/mpeg",
        "24130000",
    )
    assert episode.find(f"{MEDIA}thumbnail").get("url") == PICTURE
    rss = publisher.feed("feeds", "copies", "rss").body
    channel = etree.fromstring(rss)
    assert channel.nsmap.get("media") == "http://search.yahoo.com/mrss/"  # declared once, on top
    item = next(i for i in channel.iter("item") if "Episode 12" in (i.findtext("title") or ""))
    assert item.find("enclosure").attrib == {
        "url": EPISODE.url,
        "length": "24130000",
        "type": "audio/mpeg",
    }
    assert item.find(f"{MEDIA}thumbnail").get("url") == PICTURE
    for fmt, body in (("atom", atom), ("rss", rss), ("json", None)):
        body = body or publisher.feed("feeds", "copies", fmt).body
        parsed = parse_document(body, f"{BASE}feeds/copies.{fmt}", now)
        read = next(e for e in parsed.entries if e.title.startswith("Episode 12"))
        assert [x.url for x in read.enclosures] == [EPISODE.url], fmt
        assert read.image == PICTURE, fmt  # the picture, never the MP3


def test_the_digest_has_a_listen_link_in_both_parts(storage: Storage, clock: Clock) -> None:
    from tests.test_digest import newsroom as digest_newsroom

    config = digest_newsroom()
    storage.sync_sources(config.sources)
    storage.save_entries(
        "herald",
        [
            entry(
                "pod12", "Episode 12", "<p>Gaza talks.</p>", published=START, enclosures=(EPISODE,)
            ),
            entry("clip", "Convoys", "<p>Trucks.</p>", published=START, enclosures=(CLIP,)),
        ],
        Processor(config),
    )
    period = Period(clock.now - timedelta(days=1), clock.now + timedelta(days=1))
    rendered = render_digest(compose(storage, config, config.digests[0], period), "test")
    assert f'href="{EPISODE.url}">▶ Listen (MP3, 24.1 MB)</a>' in rendered.html
    assert f"  Listen (MP3, 24.1 MB): {EPISODE.url}" in rendered.text
    assert f"  Watch (WEBM): {CLIP.url}" in rendered.text


# -- language and dates -------------------------------------------------------------------------


def test_each_item_keeps_its_language_and_direction_on_pages_and_in_the_digest(
    storage: Storage, clock: Clock
) -> None:
    from tests.test_digest import newsroom as digest_newsroom

    config = digest_newsroom()
    storage.sync_sources(config.sources)
    storage.save_entries(
        "herald",
        [
            entry("ar1", "غزة: قافلة مساعدات", "<p>نص</p>", published=START, language="ar"),
            entry("es1", "Gaza: la ayuda espera", "<p>Texto</p>", published=START, language="es"),
            entry(
                "old",
                "A story from last year",
                "<p>Text</p>",
                published=datetime(2025, 12, 30, 18, 10, tzinfo=UTC),
            ),
            entry("none", "No language given", "<p>Text</p>", published=START),
        ],
        Processor(config),
    )
    page = Publisher(storage, config, clock=clock, refresh=0).page("sections", "world").body
    html = page.decode()
    assert '<li lang="ar" dir="rtl">' in html and '<li lang="es" dir="ltr">' in html
    assert '<li dir="auto">' in html  # no language: its own text decides the direction
    period = Period(clock.now - timedelta(days=400), clock.now + timedelta(days=1))
    rendered = render_digest(compose(storage, config, config.digests[0], period), "test")
    assert 'dir="rtl" lang="ar"' in rendered.html  # (the inliner sorts attributes)
    # the year shows where it is not the digest's own
    assert "30 Dec 2025, 18:10 GMT" in rendered.text
    assert "20 Nov, 08:00 GMT" in rendered.text


# -- podcasts ------------------------------------------------------------------------------------

PODCAST = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
<channel><title>The Briefing</title><link>https://pod.example/</link><description>d</description>
<item><guid>https://pod.example/12</guid><title>Episode 12: ceasefire talks</title>
<link>https://pod.example/12</link><description>Our correspondents in Cairo.</description>
<pubDate>Fri, 20 Nov 2026 08:00:00 +0000</pubDate>
<enclosure url="https://pod.example/12.mp3" type="audio/mpeg" length="24130000"/>
<itunes:duration>30:30</itunes:duration><itunes:explicit>clean</itunes:explicit>
<itunes:image href="https://pod.example/12.jpg"/></item>
<item><guid>https://pod.example/11</guid><title>Episode 11: the long night</title>
<link>https://pod.example/11</link><description>Explicit: war reporting.</description>
<pubDate>Thu, 19 Nov 2026 08:00:00 +0000</pubDate>
<enclosure url="https://pod.example/11.mp3" type="audio/mpeg" length="1000"/>
<itunes:duration>1:02:03</itunes:duration><itunes:explicit>true</itunes:explicit></item>
<item><guid>https://pod.example/10</guid><title>Episode 10: trailer</title>
<link>https://pod.example/10</link><description>A first look.</description>
<pubDate>Wed, 18 Nov 2026 08:00:00 +0000</pubDate>
<enclosure url="https://pod.example/10.mp3" type="audio/mpeg" length="1000"/>
<itunes:duration>95</itunes:duration><itunes:explicit>no</itunes:explicit></item>
</channel></rss>"""


def test_a_republished_podcast_keeps_its_episodes_itunes_tags(
    storage: Storage, config: Config, clock: Clock
) -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    parsed = parse_document(PODCAST, "https://pod.example/feed.xml", now)
    # Apple's "true" and "no" as well as the older "yes" and "clean" (feedparser keeps only
    # those two)
    assert [(e.duration, e.explicit, e.image) for e in parsed.entries] == [
        (1830, False, "https://pod.example/12.jpg"),
        (3723, True, None),
        (95, False, None),
    ]
    storage.sync_sources(config.sources)
    storage.save_entries("herald", parsed.entries, Processor(config))
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    rss = publisher.feed("feeds", "copies", "rss").body
    channel = etree.fromstring(rss)
    itunes = "{http://www.itunes.com/dtds/podcast-1.0.dtd}"
    assert channel.nsmap.get("itunes") == itunes[1:-1]
    episodes = {i.findtext("title"): i for i in channel.iter("item")}
    twelve = episodes["Episode 12: ceasefire talks"]
    assert twelve.findtext(f"{itunes}duration") == "00:30:30"
    assert twelve.findtext(f"{itunes}explicit") == "clean"
    assert twelve.find(f"{itunes}image").get("href") == "https://pod.example/12.jpg"
    assert twelve.find("enclosure").get("url") == "https://pod.example/12.mp3"
    assert episodes["Episode 11: the long night"].findtext(f"{itunes}explicit") == "yes"
    trailer = episodes["Episode 10: trailer"]
    assert trailer.findtext(f"{itunes}duration") == "00:01:35"
    assert trailer.findtext(f"{itunes}explicit") == "clean"
    # read back, the republished podcast is the same podcast
    again = parse_document(rss, f"{BASE}feeds/copies.rss", now)
    assert sorted((e.title, e.duration, e.explicit) for e in again.entries) == [
        ("Episode 10: trailer", 95, False),
        ("Episode 11: the long night", 3723, True),
        ("Episode 12: ceasefire talks", 1830, False),
    ]
    document = json.loads(publisher.feed("feeds", "copies", "json").body)
    attachments = {i["title"]: i["attachments"][0] for i in document["items"]}
    assert attachments["Episode 12: ceasefire talks"] == {
        "url": "https://pod.example/12.mp3",
        "mime_type": "audio/mpeg",
        "size_in_bytes": 24130000,
        "duration_in_seconds": 1830,
    }
    assert json_feed_problems(document) == []


def test_odd_podcast_and_media_values_are_dropped_not_failed() -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    odd = PODCAST.replace(
        b"<itunes:duration>30:30</itunes:duration>", b"<itunes:duration>\xc2\xb2</itunes:duration>"
    ).replace(
        b'url="https://pod.example/11.mp3"', b'url="https://pod.example/11.mp3&#10;* URGENT: renew"'
    )
    parsed = parse_document(odd, "https://pod.example/feed.xml", now)
    durations = {e.title: e.duration for e in parsed.entries}
    assert durations["Episode 12: ceasefire talks"] is None  # "²" is no duration
    (eleven,) = [e for e in parsed.entries if e.title.startswith("Episode 11")]
    # a line break in an address is dropped: no address adds a line to a text digest
    assert [x.url for x in eleven.enclosures] == ["https://pod.example/11.mp3*%20URGENT:%20renew"]


def test_an_upper_case_picture_name_keeps_the_episode(
    storage: Storage, config: Config, clock: Clock
) -> None:
    storage.sync_sources(config.sources)
    storage.save_entries(
        "herald",
        [
            entry(
                "ep",
                "Episode 13",
                "<p>Notes.</p>",
                published=START,
                enclosures=(EPISODE, Enclosure("https://pod.example/13.JPG", "")),
                image="https://pod.example/13.JPG",
                duration=60,
            )
        ],
        Processor(config),
    )
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    channel = etree.fromstring(publisher.feed("feeds", "copies", "rss").body)
    (item,) = channel.iter("item")
    assert item.findtext("{http://www.itunes.com/dtds/podcast-1.0.dtd}duration") == "00:01:00"
    page = publisher.page("feeds", "copies").body.decode()
    assert "Download the file" not in page  # the picture, by its name, is no download


@pytest.mark.parametrize(
    ("language", "attributes"),
    [
        ("ar_EG", ' lang="ar-eg" dir="rtl"'),
        ("he-IL", ' lang="he-il" dir="rtl"'),
        ("az-Arab", ' lang="az-arab" dir="rtl"'),
        ("en-GB", ' lang="en-gb" dir="ltr"'),
        ("Arabic", ' dir="auto"'),
        ('x" onmouseover="alert(1)', ' dir="auto"'),
        (None, ' dir="auto"'),
    ],
)
def test_language_attributes(language: str | None, attributes: str) -> None:
    from aggregator.templating import environment

    assert str(environment().filters["lang"](language)) == attributes
