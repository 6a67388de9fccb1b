"""The front page as a newsroom's: each section's latest stories (source, time, picture, topics
as links, "also reported by"), links to every section and topic, every feed, and the digests with
their schedule in words and a sign-up link; made again when new items arrive."""

from __future__ import annotations

from lxml import html

from aggregator.publish.catalog import Kind
from aggregator.publish.publisher import FRONT_PAGE_STORIES, Publisher
from aggregator.storage import Storage
from tests.publishing import entry
from tests.support import Clock
from tests.test_digest import newsroom, stock


def test_the_front_page_shows_the_latest_stories_by_section_and_the_digests(
    storage: Storage, clock: Clock
) -> None:
    config = newsroom()
    stock(storage, config, clock)
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    # a static export (or a web process without a signing key) serves no sign-up page
    assert b"Sign up" not in publisher.index().body
    publisher.signups = True  # as the web app says when it answers sign-ups
    publisher.configure(config)  # (documents made before are dropped)
    page = html.fromstring(publisher.index().body)
    base = "http://news.test/"
    sections = [(a.text, a.get("href")) for a in page.xpath("//section/h2/a")]
    assert sections == [("World", f"{base}sections/world"), ("Opinion", f"{base}sections/opinion")]
    world = page.xpath("//section[h2/a[text()='World']]//li")
    assert 0 < len(world) <= FRONT_PAGE_STORIES
    titles = [li.findtext(".//h3/a") for li in world]
    # newest first, as the section's own feed lists them
    newest = publisher.view(publisher.catalog.of_kind(Kind.SECTIONS)[0]).entries
    assert titles == [e.title for e in newest][: len(titles)]
    first = world[titles.index("Gaza ceasefire talks hit snag")]  # the story two outlets told
    assert "The Wire" in first.findtext(".//div[@class='meta']")
    chips = {a.text: a.get("href") for a in first.xpath(".//a[@class='chip']")}
    assert chips == {"World": f"{base}sections/world", "Palestine": f"{base}topics/palestine"}
    also = first.xpath(".//div[@class='also']")[0].text_content()
    assert also == "Also reported by: The Herald"
    # every section and topic, linked from the top
    nav = {a.text: a.get("href") for a in page.xpath("//nav[@class='kinds']/a")}
    assert nav == {
        "World": f"{base}sections/world",
        "Opinion": f"{base}sections/opinion",
        "Palestine": f"{base}topics/palestine",
        "Climate": f"{base}topics/climate",
    }
    # the digests: what, when in words, where to sign up
    digest = page.xpath("//h2[@id='digests']/following-sibling::ul[1]/li")[0]
    assert digest.findtext("h3") == "Daily briefing"
    words = digest.find("p").text_content()
    assert words == (
        "Every day at 07:00, London time: every story, first seen since the last one "
        "(at most 50). Sign up"
    )
    assert digest.find("p/a").get("href") == f"{base}digests/daily/subscribe"
    # and every feed still, with autodiscovery links in the head
    assert page.xpath("//h2[@id='feeds']")
    assert page.xpath("//link[@rel='alternate' and contains(@href, 'sections/world.atom')]")


def test_a_new_story_reaches_the_front_page(storage: Storage, clock: Clock) -> None:
    from aggregator.process.pipeline import Processor

    config = newsroom()
    stock(storage, config, clock)
    publisher = Publisher(storage, config, clock=clock, refresh=0)
    before = publisher.index()
    clock.advance(minutes=5)
    storage.save_entries(
        "herald",
        [entry("late", "Breaking: storm reaches the coast", "<p>Now.</p>", published=clock.now)],
        Processor(config),
    )
    after = publisher.index()
    assert b"Breaking: storm reaches the coast" in after.body
    assert after.etag != before.etag


def test_the_sign_up_page_says_what_a_digest_holds_and_when_it_comes(
    storage: Storage, clock: Clock
) -> None:
    from aggregator.config import Filter
    from tests.test_digest_hostile import web

    config = newsroom(filter=Filter(sections=("world",), topics=("palestine", "climate")))
    stock(storage, config, clock)
    with web(storage, config, clock) as client:
        answer = client.request("/digests/daily/subscribe")
    assert answer.status == 200
    text = " ".join(html.fromstring(answer.body).text_content().split())
    assert (
        "Daily briefing comes every day at 07:00, London time, with the stories in World about "
        "Palestine or Climate, first seen since the last one (at most 50). Get it by e-mail"
    ) in text
