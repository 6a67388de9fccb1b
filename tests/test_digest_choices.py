"""Digests shaped by their recipients: each chooses sections, topics and how often from a link in
every copy, without an account; their choice changes their copy and nobody else's. Real SMTP
(aiosmtpd), the real app under the real server, SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage

import pytest
from lxml import etree

from aggregator.config import Config
from aggregator.digest.periods import Period, editions
from aggregator.digest.send import Mailer
from aggregator.digest.subscriptions import Subscriptions
from aggregator.process.pipeline import Processor
from aggregator.publish.publisher import Publisher
from aggregator.status import summarise_digest
from aggregator.storage import Storage
from aggregator.tokens import CHOICE, Signer
from aggregator.types import WEEKLY, Choice, DeliveryStatus
from aggregator.web import create_app
from tests.mailserver import MailServer
from tests.publishing import entry, serving
from tests.support import Clock
from tests.test_digest import PERIOD, stock, utc
from tests.test_digest_send import SECRET, _post, configured, dispatcher, parts, path_of
from tests.test_web import Client

EVERY_STORY = {
    "Herald story 0",
    "Herald story 1",
    "Herald story 2",
    "Herald story 3",
    "Gaza ceasefire talks hit snag",
    "Why the <b>truce</b> matters",  # its feed's title, as written
}


@pytest.fixture
def clock() -> Clock:
    return Clock(utc(2026, 11, 23, 6))  # before the stock's stories, as `stock` expects


@pytest.fixture
def mail() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


def titles(message: EmailMessage) -> set[str]:
    text, _ = parts(message)
    return {title for title in EVERY_STORY if title in text}


def test_a_recipients_choice_changes_their_copy_and_nobody_elses(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail, recipients=("ann@example.org", "bob@example.org", "cy@example.org"))
    stock(storage, config, clock)
    storage.choose("daily", "Ann@Example.org", Choice(sections=("opinion",)))
    storage.choose("daily", "cy@example.org", Choice(topics=("climate",)))
    report = dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    assert report is not None and report.sent == 3
    ann = mail.to("ann@example.org")[0].message
    assert titles(ann) == {"Why the <b>truce</b> matters"}
    assert ann["Subject"] == "Daily briefing: 1 new, 24 Nov 2026"
    assert "You chose Opinion." in parts(ann)[0]
    cy = mail.to("cy@example.org")[0].message
    assert titles(cy) == {"Herald story 1", "Herald story 3"}  # the two about climate
    assert "You chose only stories on Climate." in parts(cy)[0]
    bob = mail.to("bob@example.org")[0].message
    assert titles(bob) == EVERY_STORY
    assert bob["Subject"] == "Daily briefing: 6 new, 24 Nov 2026"
    assert "You chose" not in parts(bob)[0]
    # every copy links to its recipient's own page to choose
    links = {
        r: re.search(r"Choose what you get: (\S+)", parts(mail.to(r)[0].message)[0])
        for r in ("ann@example.org", "bob@example.org")
    }
    assert all(m is not None for m in links.values())
    assert len({m.group(1) for m in links.values() if m}) == 2
    html = parts(ann)[1]
    assert 'href="http://news.test/digests/daily/choose?token=' in html


def test_a_choice_that_leaves_nothing_new_sends_nothing_and_says_so(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail)
    config = replace(
        config,
        topics=(
            *config.topics,
            replace(config.topics[0], id="sport", title="Sport", keywords=("cricket",)),
        ),
    )
    stock(storage, config, clock)
    storage.choose("daily", "ann@example.org", Choice(topics=("sport",)))
    report = dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    assert report is not None and (report.sent, report.nothing, report.pending) == (1, 1, 0)
    assert mail.to("ann@example.org") == [] and len(mail.to("bob@example.org")) == 1
    [run] = storage.digest_runs("daily")
    states = {d.recipient: d.status for d in storage.deliveries(run.id)}
    assert states["ann@example.org"] is DeliveryStatus.NOTHING
    # the run is finished, and running it again sends nobody anything
    assert dispatcher(storage, config, clock).run(config.digests[0], PERIOD) is None
    assert len(mail.received) == 1


def _served(storage: Storage, clock: Clock, config: Config) -> Iterator[tuple[Client, Config]]:
    """The stock stories and the real app with sign-ups under the real server."""
    stock(storage, config, clock)
    subscriptions = Subscriptions(
        storage, config, Signer(SECRET), lambda: Mailer(config.smtp, backoff=0.01), clock
    )
    with serving(create_app(Publisher(storage, config), subscriptions=subscriptions)) as port:
        yield Client(port), config


@pytest.fixture
def site(storage: Storage, mail: MailServer, clock: Clock) -> Iterator[tuple[Client, Config]]:
    yield from _served(storage, clock, configured(mail))


def _choose_link(message: EmailMessage) -> str:
    found = re.search(r"Choose what you get: (\S+)", parts(message)[0])
    assert found is not None
    return path_of(found.group(1))


def _sent_choose_link(
    storage: Storage, config: Config, clock: Clock, mail: MailServer, address: str
) -> str:
    """The choice link in `address`'s copy of a run of the first digest for PERIOD."""
    dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    return _choose_link(mail.to(address)[0].message)


def test_the_link_in_every_copy_lets_a_recipient_choose_without_an_account(
    site: tuple[Client, Config], storage: Storage, mail: MailServer, clock: Clock
) -> None:
    client, config = site
    link = _sent_choose_link(storage, config, clock, mail, "ann@example.org")
    page = client.request(link)
    assert page.status == 200 and page.headers["cache-control"] == "no-store"
    form = etree.fromstring(page.body, etree.HTMLParser())
    boxes = {
        (i.get("name"), i.get("value")): i.get("checked")
        for i in form.iter("input")
        if i.get("type") != "hidden"
    }
    assert boxes == {
        ("section", "world"): "checked",  # every section ticked: the whole digest
        ("section", "opinion"): "checked",
        ("topic", "palestine"): None,
        ("topic", "climate"): None,
    }
    assert [legend.text for legend in form.iter("legend")] == [
        "Sections",
        "Only stories on these topics",
    ]
    assert b"ann@example.org" in page.body
    # following the link (GET, HEAD: what scanners do) changes nothing
    assert client.request(link, "HEAD").status == 200
    assert storage.choice("daily", "ann@example.org") is None
    saved = _post(
        client, link, "choices=1&section=world&topic=palestine&section=evil&topic=%3Cb%3E"
    )
    assert saved.status == 200 and b"Saved: World; only stories on Palestine." in saved.body
    assert storage.choice("daily", "ann@example.org") == Choice(("world",), ("palestine",))
    assert storage.choice("daily", "bob@example.org") is None
    again = etree.fromstring(client.request(link).body, etree.HTMLParser())
    checked = {i.get("value") for i in again.iter("input") if i.get("checked")}
    assert checked == {"world", "palestine"}
    # nothing ticked among the sections is refused; the choice stays as it was
    refused = _post(client, link, "choices=1&topic=climate")
    assert refused.status == 400 and b"tick at least one section" in refused.body
    assert storage.choice("daily", "ann@example.org") == Choice(("world",), ("palestine",))
    # ticking every section again is the whole digest, sections added later included
    assert _post(client, link, "choices=1&section=world&section=opinion").status == 200
    assert storage.choice("daily", "ann@example.org") == Choice(None, ())
    # a forged or altered link changes nothing
    assert client.request(link[:-4] + "abcd").status == 400
    assert _post(client, link[:-4] + "abcd", "choices=1&section=world").status == 400
    assert storage.choice("daily", "ann@example.org") == Choice(None, ())


def test_the_next_copy_follows_the_choice_made_on_the_page(
    site: tuple[Client, Config], storage: Storage, mail: MailServer, clock: Clock
) -> None:
    client, config = site
    link = _sent_choose_link(storage, config, clock, mail, "bob@example.org")
    assert _post(client, link, "choices=1&section=world&topic=palestine").status == 200
    clock.advance(minutes=30)
    storage.save_entries(
        "herald",
        [
            entry("g2", "Aid reaches Gaza", "<p>Convoys crossed into Gaza at Rafah.</p>"),
            entry("c2", "Climate fund agreed", "<p>Ministers agreed a climate fund.</p>"),
        ],
        Processor(config),
    )
    later = replace(PERIOD, start=PERIOD.end, end=PERIOD.end + timedelta(days=1))
    dispatcher(storage, config, clock).run(config.digests[0], later)
    assert len(mail.to("ann@example.org")) == 2 and len(mail.to("bob@example.org")) == 2
    # what bob got the second time: only what he chose; ann still gets everything new
    second = mail.to("bob@example.org")[1].message
    assert "You chose World; only stories on Palestine." in parts(second)[0]
    assert "Aid reaches Gaza" in parts(second)[0]
    assert "Climate fund agreed" not in parts(second)[0]
    assert second["Subject"] == "Daily briefing: 1 new, 25 Nov 2026"
    ann = parts(mail.to("ann@example.org")[1].message)[0]
    assert "Aid reaches Gaza" in ann and "Climate fund agreed" in ann and "You chose" not in ann


# -- how often -----------------------------------------------------------------------------

WEEK = Period(utc(2026, 11, 23, 7), utc(2026, 11, 30, 7))


def test_a_recipient_who_picks_weekly_gets_the_weekly_edition_only(
    site_weekly: tuple[Client, Config], storage: Storage, mail: MailServer, clock: Clock
) -> None:
    client, config = site_weekly
    digest = config.digests[0]
    link = _sent_choose_link(storage, config, clock, mail, "ann@example.org")
    page = etree.fromstring(client.request(link).body, etree.HTMLParser())
    radios = {
        i.get("value"): i.get("checked") for i in page.iter("input") if i.get("type") == "radio"
    }
    assert radios == {"schedule": "checked", "weekly": None}
    assert b"Once a week, every Monday at 08:00" in client.request(link).body
    saved = _post(client, link, "choices=1&section=world&section=opinion&frequency=weekly")
    assert saved.status == 200 and b"Saved: once a week." in saved.body
    assert storage.choice("daily", "ann@example.org") == Choice(None, (), WEEKLY)
    # the next daily copy goes to bob alone; the weekly edition to ann alone
    later = Period(PERIOD.end, PERIOD.end + timedelta(days=1))
    storage.save_entries(
        "herald",
        [entry("g3", "Aid reaches Gaza", "<p>Convoys crossed into Gaza.</p>")],
        Processor(config),
    )
    daily = dispatcher(storage, config, clock).run(digest, later)
    assert daily is not None and daily.recipients == 1
    assert len(mail.to("ann@example.org")) == 1 and len(mail.to("bob@example.org")) == 2
    weekly = dispatcher(storage, config, clock).run(digest, WEEK, edition=WEEKLY)
    assert weekly is not None and (weekly.digest_id, weekly.sent) == ("daily:weekly", 1)
    assert len(mail.to("ann@example.org")) == 2 and len(mail.to("bob@example.org")) == 2
    copy = mail.to("ann@example.org")[1].message
    text = parts(copy)[0]
    # the week from where her last daily copy ended: nothing she had, nothing lost
    assert "Aid reaches Gaza" in text and "Herald story 0" not in text
    assert text.splitlines()[1].startswith(
        "Tuesday 24 November, 07:00 to Monday 30 November, 07:00 GMT"
    )
    assert "You chose once a week." in text
    first = mail.to("ann@example.org")[0].message
    assert copy["Message-ID"] != first["Message-ID"] and ".weekly." in copy["Message-ID"]
    # the weekly edition's period is recorded apart: sending it again sends nothing
    assert dispatcher(storage, config, clock).run(digest, WEEK, edition=WEEKLY) is None
    assert [r.period_end for r in storage.digest_runs("daily:weekly")] == [WEEK.end]


def test_the_scheduler_sends_each_edition_when_its_own_schedule_fires(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail, weekly="0 8 * * 1")
    stock(storage, config, clock)
    storage.choose("daily", "ann@example.org", Choice(frequency=WEEKLY))
    clock.now = utc(2026, 11, 30, 8, 5)  # a Monday: the daily and the weekly both fired
    reports = dispatcher(storage, config, clock).run_due()
    assert sorted((r.digest_id, r.recipients) for r in reports) == [
        ("daily", 1),
        ("daily:weekly", 1),
    ]
    assert [r.recipients[0] for r in mail.received].count("ann@example.org") == 1
    clock.now = utc(2026, 12, 1, 8, 5)  # Tuesday: only the daily
    again = dispatcher(storage, config, clock).run_due()
    assert [r.digest_id for r in again] == ["daily"]


def test_a_digest_without_weekly_offers_no_frequency_and_ignores_one_posted(
    site: tuple[Client, Config], storage: Storage, mail: MailServer, clock: Clock
) -> None:
    client, config = site
    link = _sent_choose_link(storage, config, clock, mail, "ann@example.org")
    assert b'name="frequency"' not in client.request(link).body
    assert (
        _post(client, link, "choices=1&section=world&section=opinion&frequency=weekly").status
        == 200
    )
    assert storage.choice("daily", "ann@example.org") == Choice(None, (), None)


@pytest.fixture
def site_weekly(
    storage: Storage, mail: MailServer, clock: Clock
) -> Iterator[tuple[Client, Config]]:
    yield from _served(storage, clock, configured(mail, weekly="0 8 * * 1"))


def test_a_new_subscriber_is_offered_the_choice_once_confirmed(
    site: tuple[Client, Config], storage: Storage, mail: MailServer
) -> None:
    client, _ = site
    assert _post(client, "/digests/daily/subscribe", "email=new%40example.org").status == 200
    link = re.search(r"http://news\.test/\S+", str(mail.received[0].message.get_content()))
    assert link is not None
    confirmed = _post(client, path_of(link.group(0)), "")
    assert confirmed.status == 200 and b"You are subscribed" in confirmed.body
    page = etree.fromstring(confirmed.body, etree.HTMLParser())
    [choose] = [a.get("href") for a in page.iter("a") if a.text == "Choose what you get"]
    answer = client.request(path_of(choose))
    assert answer.status == 200 and b"new@example.org" in answer.body
    assert _post(client, path_of(choose), "choices=1&section=opinion").status == 200
    assert storage.choice("daily", "new@example.org") == Choice(("opinion",), ())


def test_choices_ticked_at_sign_up_are_kept_once_the_owner_confirms(
    site: tuple[Client, Config], storage: Storage, mail: MailServer
) -> None:
    client, _ = site
    form = etree.fromstring(client.request("/digests/daily/subscribe").body, etree.HTMLParser())
    assert {(i.get("name"), i.get("value")) for i in form.iter("input") if i.get("name")} >= {
        ("section", "world"),
        ("section", "opinion"),
        ("topic", "climate"),
    }
    none_ticked = _post(client, "/digests/daily/subscribe", "email=a%40example.org&choices=1")
    assert none_ticked.status == 400 and b"tick at least one section" in none_ticked.body
    body = "email=new%40example.org&choices=1&section=opinion&topic=climate"
    assert _post(client, "/digests/daily/subscribe", body).status == 200
    assert storage.choice("daily", "new@example.org") is None  # nothing until the owner says
    found = re.search(r"http://news\.test/\S+", str(mail.received[-1].message.get_content()))
    assert found is not None and "&choice=" in found.group(0)
    link = path_of(found.group(0))
    asked = client.request(link)
    assert b"Opinion; only stories on Climate." in asked.body
    confirmed = _post(client, link, "")
    assert b"You are subscribed" in confirmed.body
    assert b"Opinion; only stories on Climate." in confirmed.body
    assert storage.choice("daily", "new@example.org") == Choice(("opinion",), ("climate",))


def test_a_stranger_signing_someone_up_with_choices_changes_nothing_of_theirs(
    site: tuple[Client, Config], storage: Storage, mail: MailServer
) -> None:
    client, _ = site
    # a YAML recipient: the owner gets a confirmation they never follow; their digest is as it was
    body = "email=ann%40example.org&choices=1&section=opinion"
    assert _post(client, "/digests/daily/subscribe", body).status == 200
    assert storage.choice("daily", "ann@example.org") is None
    # a carried choice only counts for the address it was made for, and only when genuine
    assert _post(client, "/digests/daily/subscribe", "email=new%40example.org").status == 200
    found = re.search(r"http://news\.test/\S+", str(mail.received[-1].message.get_content()))
    assert found is not None and "&choice=" not in found.group(0)
    someone_else = Signer(SECRET).sign(CHOICE, "daily", 'ann@example.org\n{"s":["opinion"]}')
    link = path_of(found.group(0)) + f"&choice={someone_else}"
    assert b"You are subscribed" in _post(client, link, "").body
    assert storage.choice("daily", "new@example.org") == Choice()  # the whole digest


def test_the_weekly_edition_has_its_own_row_for_editors(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail, weekly="0 8 * * 1")
    stock(storage, config, clock)
    storage.choose("daily", "ann@example.org", Choice(frequency=WEEKLY))
    # opinion pieces about Palestine: none in this period, so nothing for him
    storage.choose("daily", "bob@example.org", Choice(("opinion",), ("palestine",)))
    digest = config.digests[0]
    dispatcher(storage, config, clock).run(digest, PERIOD)
    dispatcher(storage, config, clock).run(digest, WEEK, edition=WEEKLY)
    daily, weekly = (summarise_digest(storage, digest, clock.now, e) for e in editions(digest))
    assert (daily.id, daily.recipients, daily.sent, daily.refused, daily.retrying) == (
        "daily",
        1,
        0,  # bob's choice left him nothing: not sent, and no failure either
        0,
        0,
    )
    assert daily.failures == ()
    assert (weekly.id, weekly.title, weekly.recipients, weekly.sent) == (
        "daily:weekly",
        "Daily briefing (weekly edition)",
        1,
        1,
    )
    assert weekly.schedule == "every Monday at 08:00, London time"
    assert weekly.next_run is not None and weekly.next_run.weekday() == 0


# -- after a review: switching editions, hostile feed text, a changed config ----------------


def test_switching_from_weekly_to_daily_loses_no_day(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    """Her last weekly copy ended on Monday; she switches to daily on Wednesday: her first
    daily copy starts where the weekly one ended, not at Wednesday's period."""
    config = configured(mail, weekly="0 7 * * 1")
    digest = config.digests[0]
    storage.choose("daily", "ann@example.org", Choice(frequency=WEEKLY))
    last_week = Period(utc(2026, 11, 16, 7), utc(2026, 11, 23, 7))
    stock(storage, config, clock)  # stories on Monday 23 November
    assert dispatcher(storage, config, clock).run(digest, last_week, edition=WEEKLY) is not None
    dispatcher(storage, config, clock).run(digest, PERIOD)  # Monday-Tuesday: bob only
    assert len(mail.to("ann@example.org")) == 1  # last week's (yesterday's climate row)
    assert len(mail.to("bob@example.org")) == 1
    storage.choose("daily", "ann@example.org", Choice())  # Wednesday: daily again
    wednesday = Period(utc(2026, 11, 24, 7), utc(2026, 11, 25, 7))
    dispatcher(storage, config, clock).run(digest, wednesday)
    copy = mail.to("ann@example.org")[1]
    text = parts(copy.message)[0]
    assert "Herald story 0" in text and "Gaza ceasefire talks hit snag" in text
    assert text.splitlines()[1].startswith("Monday 23 November, 07:00 to Wednesday 25 November")
    assert "Tomorrow's news" in text  # and Wednesday's own
    bob = parts(mail.to("bob@example.org")[1].message)[0]  # bob's Wednesday: its own only
    assert "Tomorrow's news" in bob and "Herald story 0" not in bob


def test_feed_text_holding_the_link_placeholders_gets_no_ones_link(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail)
    stock(storage, config, clock)
    bait = "https://choose.invalid/TOKEN https://unsubscribe.invalid/TOKEN"
    clock.now = utc(2026, 11, 23, 12)
    storage.save_entries(
        "herald",
        [
            entry(
                "bait",
                ("https://unsubscribe.invalid/TOKEN " * 12).strip(),
                f"<p>{bait}</p>",
                link="https://evil.example/claim?next=https://choose.invalid/TOKEN",
            )
        ],
        Processor(config),
    )
    report = dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    assert report is not None and (report.sent, report.failed) == (2, 0)
    for received in mail.received:
        text, html = parts(received.message)
        assert "evil.example/claim?next=https://choose.invalid/TOKEN" in text  # left as written
        assert text.count("token=") == 2  # the copy's own two links, and only those
        assert html.count("token=") == 2


def test_a_choice_an_editor_has_since_removed_falls_back_to_the_whole_digest(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail)
    stock(storage, config, clock)
    storage.choose("daily", "ann@example.org", Choice(("opinion",), (), WEEKLY))
    without = replace(config, sections=config.sections[:1])  # opinion gone, and no weekly
    report = dispatcher(storage, without, clock).run(without.digests[0], PERIOD)
    assert report is not None and (report.sent, report.nothing) == (2, 0)
    text = parts(mail.to("ann@example.org")[0].message)[0]
    assert "Herald story 0" in text and "You chose" not in text


def test_the_choice_page_of_an_unsubscribed_address_says_so_and_offers_to_return(
    site: tuple[Client, Config], storage: Storage, mail: MailServer, clock: Clock
) -> None:
    client, config = site
    link = _sent_choose_link(storage, config, clock, mail, "ann@example.org")
    storage.suppress("daily", "ann@example.org")
    page = client.request(link)
    assert b"ann@example.org is unsubscribed" in page.body
    assert b'action="http://news.test/digests/daily/subscribe"' in page.body
    assert storage.choice("daily", "ann@example.org") is None


def test_a_new_subscription_starts_from_the_whole_digest(
    site: tuple[Client, Config], storage: Storage, mail: MailServer
) -> None:
    client, _ = site
    storage.choose("daily", "new@example.org", Choice(("opinion",), (), None))  # long ago
    assert _post(client, "/digests/daily/subscribe", "email=new%40example.org").status == 200
    found = re.search(r"http://news\.test/\S+", str(mail.received[-1].message.get_content()))
    assert found is not None
    assert b"You are subscribed" in _post(client, path_of(found.group(0)), "").body
    assert storage.choice("daily", "new@example.org") == Choice(None, (), None)
