"""Digests: which period is due, what goes in, and how it renders (golden files), on SQLite and
PostgreSQL. Sending is not built yet; these cover composing and previewing."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.parser import HeaderParser
from pathlib import Path

import pytest

from aggregator.config import (
    Config,
    Digest,
    Filter,
    Output,
    Publishing,
    Section,
    Server,
    Source,
    load_config,
)
from aggregator.config import Topic as TopicRule
from aggregator.digest.compose import DigestView, compose
from aggregator.digest.periods import Period, current, due, next_run
from aggregator.digest.render import UNSUBSCRIBE, render_digest, subject
from aggregator.process.pipeline import Processor
from aggregator.storage import Storage
from aggregator.types import DigestRun, RunStatus
from tests.conftest import DATA
from tests.publishing import WIRE, entry
from tests.support import UNSAFE, Clock

GOLDEN = DATA / "digest"
LONDON = "Europe/London"
DAILY = Digest("daily", "Daily briefing", "0 7 * * *", timezone=LONDON, filter=Filter())


def run(start: datetime, end: datetime, status: RunStatus = RunStatus.DONE) -> DigestRun:
    return DigestRun(1, "daily", start, end, status, None, None, end)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# -- periods -----------------------------------------------------------------------------------


def test_the_first_period_is_one_interval_back_from_the_last_firing() -> None:
    assert due(DAILY, utc(2026, 11, 24, 9, 30), None) == Period(
        utc(2026, 11, 23, 7), utc(2026, 11, 24, 7)
    )


def test_nothing_is_due_until_the_schedule_fires_again() -> None:
    last = run(utc(2026, 11, 23, 7), utc(2026, 11, 24, 7))
    assert due(DAILY, utc(2026, 11, 25, 6, 59), last) is None
    assert due(DAILY, utc(2026, 11, 25, 7, 2), last) == Period(
        utc(2026, 11, 24, 7), utc(2026, 11, 25, 7)
    )


def test_a_service_down_over_send_times_catches_up_with_one_period() -> None:
    last = run(utc(2026, 11, 20, 7), utc(2026, 11, 21, 7))
    caught_up = due(DAILY, utc(2026, 11, 24, 12), last)  # missed the 22nd, 23rd and 24th
    assert caught_up == Period(utc(2026, 11, 21, 7), utc(2026, 11, 24, 7))


def test_a_run_cut_off_mid_send_is_resumed_with_its_own_period() -> None:
    last = run(utc(2026, 11, 23, 7), utc(2026, 11, 24, 7), RunStatus.SENDING)
    assert due(DAILY, utc(2026, 11, 26, 12), last) == Period(
        utc(2026, 11, 23, 7), utc(2026, 11, 24, 7), resumed=True
    )


def test_periods_follow_the_digests_time_zone_across_a_clock_change() -> None:
    # 07:00 in London is 07:00 UTC in winter and 06:00 UTC in summer (clocks went back 25 Oct)
    last = run(utc(2026, 10, 23, 6), utc(2026, 10, 24, 6))
    assert due(DAILY, utc(2026, 10, 26, 12), last) == Period(
        utc(2026, 10, 24, 6), utc(2026, 10, 26, 7)
    )
    assert next_run(DAILY, utc(2026, 11, 24, 8)) == utc(2026, 11, 25, 7)
    weekly = replace(DAILY, schedule="0 8 * * 1")  # Mondays
    assert due(weekly, utc(2026, 11, 24, 9), None) == Period(
        utc(2026, 11, 16, 8), utc(2026, 11, 23, 8)
    )


def test_a_preview_covers_from_the_last_period_until_a_moment_ago() -> None:
    now = utc(2026, 11, 24, 12)
    settled = now - timedelta(minutes=2)  # what is being stored now is not in yet
    assert current(DAILY, now, None) == Period(utc(2026, 11, 24, 7), settled)
    last = run(utc(2026, 11, 23, 7), utc(2026, 11, 24, 7))
    assert current(DAILY, now, last) == Period(utc(2026, 11, 24, 7), settled)


def test_a_period_is_sent_a_moment_after_it_ends() -> None:
    last = run(utc(2026, 11, 23, 7), utc(2026, 11, 24, 7))
    assert due(DAILY, utc(2026, 11, 25, 7, 1), last) is None
    assert due(DAILY, utc(2026, 11, 25, 7, 2), last) is not None


@pytest.mark.parametrize(
    ("zone_name", "schedule", "now"),
    [
        ("Europe/Berlin", "30 2 * * *", utc(2026, 10, 25, 3)),  # 02:30 happens twice
        ("Europe/London", "0 * * * *", utc(2026, 10, 25, 2, 30)),
        ("America/New_York", "30 1 * * *", utc(2026, 11, 1, 7)),
        ("Europe/Berlin", "30 2 * * *", utc(2026, 3, 29, 3)),  # 02:30 never happens
    ],
)
def test_clock_changes_never_stall_the_schedule(
    zone_name: str, schedule: str, now: datetime
) -> None:
    digest = replace(DAILY, schedule=schedule, timezone=zone_name)
    period = due(digest, now, None)
    assert period is not None and period.start < period.end <= now


# -- composing ---------------------------------------------------------------------------------


def newsroom(**digest: object) -> Config:
    return Config(
        sections=(Section("world", "World"), Section("opinion", "Opinion", paths=("/opinion/",))),
        topics=(
            TopicRule("palestine", "Palestine", keywords=("Gaza",)),
            TopicRule("climate", "Climate", keywords=("climate",)),
        ),
        sources=(
            Source("wire", "https://wire.example/feed", "world", title="The Wire", priority=10),
            Source("herald", "https://herald.example/rss", "world", title="The Herald"),
        ),
        outputs=(Output("world-only", "World", filter=Filter(sections=("world",))),),
        digests=(replace(DAILY, **digest),),  # type: ignore[arg-type]
        server=Server(base_url="http://news.test/"),
        publishing=Publishing(title="The Aggregator"),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(utc(2026, 11, 23, 6))


def stock(storage: Storage, config: Config, clock: Clock) -> None:
    """Before the period: an old story; in it: five stories, one told twice, an opinion piece,
    and a late copy of the old story; after it: one more."""
    processor = Processor(config)
    storage.sync_sources(config.sources)
    storage.save_entries(
        "herald", [entry("old", "Yesterday's climate row", "<p>Old climate news.</p>")], processor
    )
    clock.now = utc(2026, 11, 23, 9)
    for n in range(4):
        clock.advance(minutes=30)
        storage.save_entries(
            "herald",
            [
                entry(
                    f"h{n}",
                    f"Herald story {n}",
                    f"<p>Report {n} {'about climate' if n % 2 else ''}.</p>",
                    published=clock.now,
                )
            ],
            processor,
        )
    clock.advance(minutes=10)
    storage.save_entries(
        "herald", [entry("hw", "Gaza truce talks stall", WIRE, published=clock.now)], processor
    )
    clock.advance(minutes=10)
    storage.save_entries(
        "wire",
        [entry("w1", "Gaza ceasefire talks hit snag", WIRE + " More.", published=clock.now)],
        processor,
    )
    storage.save_entries(
        "herald",
        [
            entry(
                "op",
                "Why the <b>truce</b> matters",
                "<p>A column.</p>",
                link="https://herald.example/opinion/truce",
                published=clock.now,
            )
        ],
        processor,
    )
    storage.save_entries(
        "wire",
        [
            entry(
                "late",
                "Yesterday's climate row",
                "<p>Old climate news.</p>",
                link="https://news.example/old",
            )
        ],
        processor,
    )
    clock.now = utc(2026, 11, 24, 8)
    storage.save_entries("herald", [entry("after", "Tomorrow's news", "<p>Later.</p>")], processor)


PERIOD = Period(utc(2026, 11, 23, 7), utc(2026, 11, 24, 7))


def test_a_digest_holds_the_stories_first_seen_in_its_period_once_each(
    storage: Storage, clock: Clock
) -> None:
    config = newsroom()
    stock(storage, config, clock)
    view = compose(storage, config, config.digests[0], PERIOD)
    titles = [e.title for e in view.entries]
    assert "Tomorrow's news" not in titles and "Yesterday's climate row" not in titles
    assert "Gaza truce talks stall" not in titles  # the wire's copy leads the story
    gaza = next(e for e in view.entries if e.title == "Gaza ceasefire talks hit snag")
    assert [a.source for a in gaza.also] == ["The Herald"]
    assert view.count == view.total == 6
    assert view.sources == 2
    assert [g.title for g in view.groups] == ["World", "Opinion"]  # feeds.yaml's order


def test_max_items_keeps_the_newest_and_says_how_many_there_were(
    storage: Storage, clock: Clock
) -> None:
    config = newsroom(max_items=2)
    stock(storage, config, clock)
    view = compose(storage, config, config.digests[0], PERIOD)
    assert (view.count, view.total) == (2, 6)
    assert {e.title for e in view.entries} == {
        "Gaza ceasefire talks hit snag",
        "Why the <b>truce</b> matters",  # stored as text: shown escaped, never as markup
    }


@pytest.mark.parametrize(
    ("group_by", "headings"),
    [
        ("topic", ["Palestine", "Climate", "Other news"]),
        ("source", ["The Herald", "The Wire"]),
        ("none", [""]),
    ],
)
def test_grouping(storage: Storage, clock: Clock, group_by: str, headings: list[str]) -> None:
    config = newsroom(group_by=group_by)
    stock(storage, config, clock)
    view = compose(storage, config, config.digests[0], PERIOD)
    assert [g.title for g in view.groups] == headings
    assert sum(len(g.entries) for g in view.groups) == 6


def test_a_digest_can_take_an_outputs_items(storage: Storage, clock: Clock) -> None:
    config = newsroom(filter=None, output="world-only")
    stock(storage, config, clock)
    view = compose(storage, config, config.digests[0], PERIOD)
    assert [g.title for g in view.groups] == ["World"]


# -- rendering ---------------------------------------------------------------------------------


def test_rendering_matches_the_golden_files(storage: Storage, clock: Clock) -> None:
    config = newsroom()
    stock(storage, config, clock)
    view = compose(storage, config, config.digests[0], PERIOD)
    rendered = render_digest(view, "your address is on the list of Daily briefing")
    personal = rendered.for_recipient(
        "http://news.test/digests/daily/unsubscribe?token=abc",
        "http://news.test/digests/daily/choose?token=abc",
    )
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        (GOLDEN / "daily.html").write_text(personal.html, encoding="utf-8")
        (GOLDEN / "daily.txt").write_text(personal.text, encoding="utf-8")
    assert personal.html == (GOLDEN / "daily.html").read_text(encoding="utf-8")
    assert personal.text == (GOLDEN / "daily.txt").read_text(encoding="utf-8")
    assert UNSUBSCRIBE not in personal.html + personal.text
    assert rendered.subject == "Daily briefing: 6 new, 24 Nov 2026"


def test_the_html_is_made_for_mail_clients(storage: Storage, clock: Clock) -> None:
    config = newsroom()
    stock(storage, config, clock)
    html = render_digest(compose(storage, config, config.digests[0], PERIOD), "test").html
    body = html.split("<body", 1)[1]
    assert not UNSAFE.search(body.replace("<style>", ""))  # no script, no links to CSS
    assert "<script" not in html and "<link" not in html and "<img" not in html
    assert 'role="presentation"' in body and 'width="600"' in body
    # every styled element carries its style inline (Gmail drops <style> in many cases)
    for tag in re.findall(r"<(?:h1|h2|a|p)\b[^>]*>", body):
        assert 'style="' in tag, tag
    assert "Why the &lt;b&gt;truce&lt;/b&gt; matters" in html
    assert "prefers-color-scheme: dark" in html  # kept for the clients that read <style>


def test_the_text_part_says_the_same(storage: Storage, clock: Clock) -> None:
    config = newsroom()
    stock(storage, config, clock)
    view = compose(storage, config, config.digests[0], PERIOD)
    text = render_digest(view, "test").text
    for e in view.entries:
        assert e.title in text
        assert e.link is not None and e.link in text
    assert "Also reported by: The Herald <https://news.example/hw>" in text
    assert "The day to 07:00 GMT on Tuesday 24 November" in text
    assert "&amp;" not in text and "<p>" not in text


def test_a_subject_is_one_line_whatever_the_editor_wrote() -> None:
    config = newsroom(subject="{title}\r\nBcc: victim@example.com {count} {nonsense}")
    view = replace(_empty_view(config), count=3)
    line = subject(view)
    assert "\n" not in line and "\r" not in line
    assert line == "Daily briefing Bcc: victim@example.com 3 {nonsense}"
    assert HeaderParser().parsestr(f"Subject: {line}\n\n")["Subject"] == line


def _empty_view(config: Config) -> DigestView:
    return DigestView(config.digests[0], PERIOD, (), 0, 0, 0, "http://news.test/", "The Aggregator")


def test_an_empty_period_renders_a_clear_message(storage: Storage, clock: Clock) -> None:
    config = newsroom()
    storage.sync_sources(config.sources)
    view = compose(storage, config, config.digests[0], PERIOD)
    rendered = render_digest(view, "test")
    assert view.count == 0 and "Nothing new in this period." in rendered.text
    assert "Nothing new in this period." in rendered.html


def ten_minutes_ago() -> datetime:
    """Items stored a while ago: a digest sent now leaves out the last two minutes."""
    return datetime.now(UTC) - timedelta(minutes=10)


def a_daily_schedule() -> str:
    """A daily schedule (UTC) whose last time was two to three hours ago: the period it leaves
    for a digest sent now holds items stored ten minutes ago whatever the time of day (at 7:00,
    with a fixed hour, the ten minutes after it held none)."""
    return f"0 {(datetime.now(UTC) - timedelta(hours=2)).hour} * * *"


# -- the command -------------------------------------------------------------------------------


def test_digest_preview_and_list_commands(tmp_path: Path) -> None:
    from tests.test_cli import aggregator

    db = tmp_path / "a.db"
    config = tmp_path / "feeds.yaml"
    schedule = a_daily_schedule()
    config.write_text(
        "sections: [{id: world, title: World}]\n"
        "sources: [{id: herald, url: 'https://herald.example/rss', section: world,\n"
        "           title: Herald}]\n"
        f"digests: [{{id: daily, title: Daily, schedule: '{schedule}', filter: {{}},\n"
        "            recipients: [a@example.org]}]\n"
        f"storage: {{url: 'sqlite:///{db}'}}\n"
    )
    storage = Storage.open(f"sqlite:///{db}", clock=ten_minutes_ago)
    storage.sync_sources(load_config(config).sources)
    storage.save_entries("herald", [entry("n1", "Fresh <news> & more", "<p>Body</p>")])
    storage.close()
    out = tmp_path / "preview.html"
    result = aggregator(
        "digest", "preview", "daily", "--out", str(out), "-c", str(config), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "1 story (" in result.stdout and "Daily: 1 new" in result.stdout
    assert "Fresh &lt;news&gt; &amp; more" in out.read_text()
    text = aggregator("digest", "preview", "daily", "--text", "-c", str(config), cwd=tmp_path)
    assert "* Fresh <news> & more" in text.stdout
    listed = aggregator("digest", "list", "-c", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    hour = schedule.split()[1].zfill(2)
    assert re.search(rf"daily\s+every day at {hour}:00, UTC\s+-\s+never sent", listed.stdout)
    (row,) = json.loads(
        aggregator("digest", "list", "--json", "-c", str(config), cwd=tmp_path).stdout
    )
    assert row["id"] == "daily" and row["state"] == "never sent" and row["sent"] == 0
    assert row["schedule"] == f"every day at {hour}:00, UTC" and row["next_run"].endswith("+00:00")
    missing = aggregator("digest", "preview", "weekly", "-c", str(config), cwd=tmp_path)
    assert missing.returncode == 1 and "no digest 'weekly'" in missing.stderr


def test_editors_templates_replace_the_built_in_ones(
    storage: Storage, clock: Clock, tmp_path: Path
) -> None:
    (tmp_path / "digest.txt").write_text("Our own: {{ view.count }} stories, {{ subject }}\n")
    config = newsroom()
    stock(storage, config, clock)
    view = compose(storage, config, config.digests[0], PERIOD)
    rendered = render_digest(view, "test", str(tmp_path))
    assert rendered.text == "Our own: 6 stories, Daily briefing: 6 new, 24 Nov 2026\n"
    assert "<table" in rendered.html  # digest.html was not replaced: the built-in one


@pytest.mark.parametrize(
    ("start", "end", "header", "footer"),
    [
        (
            utc(2026, 11, 23, 7),
            utc(2026, 11, 24, 7),
            "The day to 07:00 GMT on Tuesday 24 November",
            "first saw in the day to 07:00 GMT on Tuesday 24 November.",
        ),
        (
            utc(2026, 11, 23, 7),
            utc(2026, 11, 30, 7),
            "The week to 07:00 GMT on Monday 30 November",
            "first saw in the week to 07:00 GMT on Monday 30 November.",
        ),
        (
            utc(2026, 11, 24, 7),
            utc(2026, 11, 24, 19),
            "07:00 to 19:00 GMT on Tuesday 24 November",
            "first saw from 07:00 to 19:00 GMT on Tuesday 24 November.",
        ),
        (
            utc(2026, 11, 21, 7),
            utc(2026, 11, 24, 7),
            "Saturday 21 November, 07:00 to Tuesday 24 November, 07:00 GMT",
            "first saw from Saturday 21 November, 07:00 to Tuesday 24 November, 07:00 GMT.",
        ),
        (
            utc(2026, 12, 31, 7),
            utc(2027, 1, 1, 7),
            "The day to 07:00 GMT on Friday 1 January",
            "first saw in the day to 07:00 GMT on Friday 1 January.",
        ),
        (
            utc(2026, 12, 30, 7),
            utc(2027, 1, 2, 7),
            "Wednesday 30 December 2026, 07:00 to Saturday 2 January, 07:00 GMT",
            "first saw from Wednesday 30 December 2026, 07:00 to Saturday 2 January, 07:00 GMT.",
        ),
        # an hour across the autumn change: the start's zone is named too
        (
            utc(2026, 10, 25, 0),
            utc(2026, 10, 25, 1),
            "01:00 BST to 01:00 GMT on Sunday 25 October",
            "first saw from 01:00 BST to 01:00 GMT on Sunday 25 October.",
        ),
        # London's clocks go back on 25 Oct 2026: a day of 25 hours is still a day, in BST/GMT
        (
            utc(2026, 10, 24, 6),
            utc(2026, 10, 25, 7),
            "The day to 07:00 GMT on Sunday 25 October",
            "first saw in the day to 07:00 GMT on Sunday 25 October.",
        ),
    ],
)
def test_the_period_reads_as_people_say_it(
    start: datetime, end: datetime, header: str, footer: str
) -> None:
    view = replace(_empty_view(newsroom(skip_empty=False)), period=Period(start, end))
    rendered = render_digest(view, "test")
    assert rendered.text.splitlines()[1].startswith(header + " - ")
    assert footer in " ".join(rendered.html.split())
