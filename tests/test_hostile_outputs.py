"""Hostile stored items against every published output (issue 13, items 8-10).

Items go through the real parser where a feed could deliver them, and straight into the real
storage where they stand for rows written before the parse-time fixes. The outputs are read the
way subscribers get them: `aggregator export` in a subprocess, and the web app on a real socket.

The W3C Feed Validator cannot be reached from here, so the rules of it that these items touch
are checks of their own (`_validator_findings`), written from its rules:
- Atom: an entry's own alternate link is its first link, before `<source>`; `<source>` has id,
  title and updated; ids are unique; dates are RFC 3339; a type="text" construct holds no HTML
  end tag and no HTML entity reference (ContainsUndeclaredHTML); no C1 control (BadCharacters).
- RSS: dates are RFC 822; guids are unique; `<description>` and `content:encoded` are HTML whose
  every `&` starts a reference ("AT&T" is invalid HTML); plain-text elements holding `<x` or
  `&#` carry a hexadecimal character reference on their line (RSS Profile, CharacterData).
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from html.entities import name2codepoint
from pathlib import Path

import pytest
from lxml import etree
from lxml import html as lxml_html

from aggregator.config import Config, load_config
from aggregator.feed.parse import parse_document
from aggregator.process.pipeline import Processor
from aggregator.publish import feeds, jsonfeed
from aggregator.publish.publisher import Publisher
from aggregator.storage import Storage
from aggregator.types import Entry
from aggregator.web import create_app
from tests.conftest import ROOT
from tests.publishing import START, entry, fill, newsroom, serving
from tests.support import Clock
from tests.test_web import Client

ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}encoded"
HOSTILE = "https://hostile.example/atom"
SCRIPTED = "<img src=x onerror=alert(1)>"

# A feed that says its title and summary are plain text: what it shows is markup-looking text.
PLAIN_TEXT_FEED = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <id>urn:example:hostile</id>
  <title>Hostile</title>
  <updated>2026-11-20T10:00:00Z</updated>
  <entry>
    <id>urn:example:img</id>
    <title type="text">&lt;img src=x onerror=alert(1)&gt;</title>
    <link href="https://hostile.example/img"/>
    <published>2026-11-20T09:00:00Z</published>
    <updated>2026-11-20T09:30:00Z</updated>
    <summary type="text">Plain text: &lt;img src=x onerror=alert(1)&gt; is not markup</summary>
  </entry>
  <entry>
    <id>urn:example:att</id>
    <title type="text">AT&amp;T results</title>
    <link href="https://hostile.example/att"/>
    <published>2026-11-20T10:00:00Z</published>
    <summary type="text">AT&amp;T said profits rose</summary>
  </entry>
</feed>
"""

# Stored as if written before the parse-time fix: control characters, noncharacters, and a C1
# control of mis-decoded text. (NUL and lone surrogates cannot be stored at all; see the last test.)
BELL = entry(
    "bell",
    "Bell\x08 rings\x0c twice\ufffe",
    "<p>Ding\x08 dong\x1f\uffff</p>",
    published=START + timedelta(hours=30),
    authors=("Ann\x01 Author",),
    content="<p>Ding\x08 dong, \x85twice.</p>",
)
ONLY_CONTROLS = entry(
    "ctl", "\x08\x0b", "<p>A story whose title was control characters only.</p>", published=START
)


def _store_hostile(storage: Storage, processor: Processor, clock: Clock) -> None:
    fill(storage, processor)
    parsed = parse_document(PLAIN_TEXT_FEED, HOSTILE, clock.now)
    storage.save_entries("hostile", list(parsed.entries), processor)
    storage.save_entries("herald", [BELL, ONLY_CONTROLS], processor)


def _config() -> Config:
    base = newsroom()
    sources = (*base.sources, replace(base.sources[1], id="hostile", url=HOSTILE, title=""))
    return replace(base, sources=sources)


@pytest.fixture
def config() -> Config:
    return _config()


@pytest.fixture
def publisher(storage: Storage, config: Config, clock: Clock) -> Publisher:
    storage.sync_sources(config.sources)
    _store_hostile(storage, Processor(config), clock)
    return Publisher(storage, config, clock=clock, refresh=0)


# -- what every document must hold -------------------------------------------------------------

EXPECTED_TITLES = {
    "Herald story 0",
    "Why climate plans fail",
    "Bell rings twice",  # cleaned, not dropped
    SCRIPTED,  # plain text, shown as text
    "AT&T results",
    "A story whose title was control characters only.",
}


def _titles(fmt: str, body: bytes) -> set[str]:
    if fmt == "json":
        return {item["title"] for item in json.loads(body)["items"]}
    root = etree.fromstring(body)  # strict: a document that is not XML fails here
    if fmt == "atom":
        return {e.findtext(f"{ATOM}title") or "" for e in root.iter(f"{ATOM}entry")}
    return {item.findtext("title") or "" for item in root.iter("item")}


def _check_document(fmt: str, body: bytes) -> None:
    assert _titles(fmt, body) >= EXPECTED_TITLES, fmt
    assert not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|\xc2[\x80-\x9f]|\xef\xbf[\xbe\xbf]", body)
    if fmt != "json":
        assert _validator_findings(fmt, body) == [], fmt


# -- the validator's rules, as checks ----------------------------------------------------------

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
RFC822 = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}")
UUID_URN = re.compile(r"urn:uuid:[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")
HTML_END_TAG = re.compile(r"</(\w+)>")
ENTITY = re.compile(r"&(#?\w+)")
BARE_AMPERSAND = re.compile(r"&(?!(?:[a-zA-Z][a-zA-Z0-9]*|#[0-9]+|#x[0-9a-fA-F]+);)")
HTML_TAGS = {"a", "b", "i", "p", "em", "strong", "div", "span", "img", "script", "br", "li"}


def _lines(body: bytes, element: etree._Element) -> str:
    """The raw text of the lines an element spans (the validator looks at the raw bytes)."""
    lines = body.decode().split("\n")
    start = (element.sourceline or 1) - 1
    end = start + etree.tostring(element, with_tail=False).count(b"\n") + 1
    return "\n".join(lines[start:end])


def _looks_like_html(text: str) -> str | None:
    """The validator's ContainsHTML test for text that should be plain."""
    tags = [t for t in HTML_END_TAG.findall(text) if t.lower() in HTML_TAGS]
    if tags:
        return f"end tag </{tags[0]}>"
    for name in ENTITY.findall(text):
        if name in name2codepoint or name == "apos" or not name.isalpha():
            return f"entity &{name};"
    return None


def _html_findings(where: str, text: str) -> list[str]:
    """What the validator reports for an HTML field: invalid HTML or live scripting."""
    found = []
    if BARE_AMPERSAND.search(text):
        found.append(f"{where}: '&' that starts no reference (invalid HTML)")
    if text.strip():
        fragment = lxml_html.fragment_fromstring(text, create_parent="div")
        for element in fragment.iter():
            if not isinstance(element.tag, str):
                continue
            if element.tag in ("script", "iframe", "object", "embed", "meta"):
                found.append(f"{where}: <{element.tag}>")
            found += [f"{where}: {a}=" for a in element.attrib if a.lower().startswith("on")]
    return found


def _validator_findings(fmt: str, body: bytes) -> list[str]:
    root = etree.fromstring(body)
    return _atom_findings(root) if fmt == "atom" else _rss_findings(root, body)


def _atom_findings(root: etree._Element) -> list[str]:
    found: list[str] = []
    ids = [e.findtext(f"{ATOM}id") for e in root.iter(f"{ATOM}entry")]
    if len(ids) != len(set(ids)):
        found.append("duplicate entry ids")
    for date in root.iter(f"{ATOM}updated", f"{ATOM}published"):
        if not RFC3339.fullmatch(date.text or ""):
            found.append(f"not RFC 3339: {date.text!r}")
    for element in root.iter(f"{ATOM}title", f"{ATOM}summary", f"{ATOM}content"):
        text = element.text or ""
        if re.search("[\x80-\x9f]", text):
            found.append(f"C1 control in {element.tag}")
        if element.get("type", "text") == "text" and (why := _looks_like_html(text)):
            found.append(f"{element.tag} type=text holds {why}")
        elif element.get("type") == "html":
            found += _html_findings(element.tag, text)
    for e in root.iter(f"{ATOM}entry"):
        name = e.findtext(f"{ATOM}title")
        links = list(e.iter(f"{ATOM}link"))  # in document order, <source>'s included
        own = [link for link in e.findall(f"{ATOM}link") if link.get("rel") == "alternate"]
        if own and links[0] is not own[0]:
            found.append(f"{name!r}: its own alternate link is not its first link")
        source = e.find(f"{ATOM}source")
        if source is not None:
            if list(e).index(source) < max(list(e).index(link) for link in own or [source]):
                found.append(f"{name!r}: <source> before the entry's own link")
            for part in ("id", "title", "updated"):
                if not (source.findtext(f"{ATOM}{part}") or "").strip():
                    found.append(f"{name!r}: <source> lacks {part}")
            if not UUID_URN.fullmatch(source.findtext(f"{ATOM}id") or ""):
                found.append(f"{name!r}: <source> id is not a urn:uuid")
    return found


def _rss_findings(root: etree._Element, body: bytes) -> list[str]:
    found: list[str] = []
    guids = [item.findtext("guid") for item in root.iter("item")]
    if len(guids) != len(set(guids)):
        found.append("duplicate guids")
    for date in root.iter("pubDate", "lastBuildDate"):
        if not RFC822.fullmatch(date.text or ""):
            found.append(f"not RFC 822: {date.text!r}")
        else:
            parsedate_to_datetime(date.text or "")
    for item in root.iter("item"):
        for name in ("description", CONTENT):
            element = item.find(name)
            if element is not None:
                found += _html_findings(f"{item.findtext('title')!r} {name}", element.text or "")
    for element in root.iter("title", "category", "source", "generator"):
        text = element.text or ""
        if re.search(r"&#[x0-9]|<[/a-zA-Z]", text) and "&#x" not in _lines(body, element):
            found.append(f"{element.tag} {text!r}: '<' or '&' not as a character reference")
    return found


def test_the_validator_checks_do_catch_what_the_validator_reports() -> None:
    """The checks are not rubber stamps: each finds the mistake it stands for."""
    atom = b"""<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>a</id>
<title>T &amp;lt;b&amp;gt;</title><updated>2026-11-20 08:00</updated><source><link href="https://x.example/feed"/><title>X</title>
</source><link rel="alternate" href="https://x.example/1"/></entry></feed>"""
    found = " | ".join(_validator_findings("atom", atom))
    for expected in ("not RFC 3339", "holds entity &lt;", "not its first link", "lacks id"):
        assert expected in found
    rss = b"""<rss version="2.0"><channel><item><title>Using &lt;canvas&gt;</title>
<description>AT&amp;T &lt;img src=x onerror=alert(1)&gt;</description>
<pubDate>2026-11-20T08:00:00Z</pubDate><guid>g</guid></item><item><guid>g</guid></item>
</channel></rss>"""
    found = " | ".join(_validator_findings("rss", rss))
    for expected in ("duplicate guids", "not RFC 822", "invalid HTML", "onerror=", "character ref"):
        assert expected in found


# -- item 8: one item never breaks an output ----------------------------------------------------


def test_every_document_is_written_with_the_hostile_items_cleaned(publisher: Publisher) -> None:
    checked = 0
    for publication in publisher.catalog:
        for fmt in publication.formats:
            body = publisher.feed(publication.kind, publication.id, fmt).body
            assert _titles(fmt, body), publication.key  # parses, and lists entries
            if publication.key == "feeds/all":
                _check_document(fmt, body)
                checked += 1
    assert checked == 3


def test_aggregator_export_writes_every_document(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "sections: [{id: world, title: World}]\n"
        "sources:\n"
        "  - {id: herald, url: 'https://herald.example/rss', section: world, title: Herald}\n"
        "  - {id: wire, url: 'https://wire.example/feed', section: world, title: The Wire}\n"
        "  - {id: blog, url: 'https://blog.example/atom', section: world}\n"
        f"  - {{id: hostile, url: '{HOSTILE}', section: world}}\n"
        "outputs: [{id: all, title: Everything}]\n"
        "server: {host: 127.0.0.1, port: 8080, base_url: 'http://news.test/'}\n"
        f"storage: {{url: '{database_url}'}}\n"
    )
    config = load_config(path)
    storage = Storage.open(config.storage.url)
    try:
        storage.sync_sources(config.sources)
        _store_hostile(storage, Processor(config), Clock(datetime.now(UTC)))
    finally:
        storage.close()
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "export", "--out", "site", "-c", str(path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # the tree under test, wherever it is
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    site = tmp_path / "site"
    for fmt in ("atom", "rss", "json"):
        _check_document(fmt, (site / "feeds" / f"all.{fmt}").read_bytes())
    for written in site.rglob("*.*"):
        if written.suffix in (".atom", ".rss", ".xml"):
            etree.fromstring(written.read_bytes())


@pytest.fixture
def client(publisher: Publisher) -> Iterator[Client]:
    with serving(create_app(publisher, refresh=0.1)) as port:
        yield Client(port)


def test_the_web_app_serves_every_feed_with_the_hostile_items(client: Client) -> None:
    for fmt in ("atom", "rss", "json"):
        answer = client.request(f"/feeds/all.{fmt}")
        assert answer.status == 200, (fmt, answer.body[:300])
        _check_document(fmt, answer.body)
    assert client.request("/feeds/all").status == 200


def test_an_entry_that_cannot_be_written_is_left_out_and_named(
    publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever makes one entry unwritable (here a date without a time zone, as a careless
    storage driver would hand back), the document is served without it and the log says which;
    text no storage could hold (NUL, a lone surrogate) is cleaned by the writer itself."""
    view = publisher.view(publisher.publication("feeds", "all"))
    broken, unclean = view.entries[0], view.entries[1]
    naive = broken.published.replace(tzinfo=None)
    view = replace(
        view,
        entries=(
            replace(broken, published=naive),
            replace(unclean, title="Nul\x00 and \ud800surrogate", summary_text="x\x00y"),
            *view.entries[2:],
        ),
    )
    with caplog.at_level(logging.WARNING, logger="aggregator.publish"):
        bodies = {"atom": feeds.atom(view), "rss": feeds.rss(view), "json": jsonfeed.render(view)}
    for fmt, body in bodies.items():
        titles = _titles(fmt, body)
        assert broken.title not in titles, fmt
        assert "Nul and surrogate" in titles, fmt
        assert len(titles) == len(view.entries) - 1, fmt
        named = [r for r in caplog.records if broken.id in r.getMessage()]
        assert any(f"feeds/all.{fmt}" in r.getMessage() for r in named), fmt


# -- item 9: text is never markup where readers expect HTML -------------------------------------


def _html_fields(fmt: str, body: bytes) -> dict[str, list[str]]:
    """Each entry's fields a reader renders as HTML, by entry title."""
    fields: dict[str, list[str]] = {}
    if fmt == "json":
        for item in json.loads(body)["items"]:
            fields[item["title"]] = [item["content_html"]]
        return fields
    root = etree.fromstring(body)
    if fmt == "atom":
        for e in root.iter(f"{ATOM}entry"):
            html_parts = [
                c.text or ""
                for c in e
                if c.tag in (f"{ATOM}content", f"{ATOM}summary", f"{ATOM}title")
                and c.get("type") == "html"
            ]
            fields[e.findtext(f"{ATOM}title") or ""] = html_parts
        return fields
    for item in root.iter("item"):
        found = (item.find(name) for name in ("description", CONTENT))
        fields[item.findtext("title") or ""] = [f.text or "" for f in found if f is not None]
    return fields


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_plain_text_is_escaped_wherever_readers_expect_html(publisher: Publisher, fmt: str) -> None:
    body = publisher.feed("feeds", "all", fmt).body
    fields = _html_fields(fmt, body)
    shown = fields[SCRIPTED]
    assert shown, "the entry's HTML fields are missing"
    for text in shown:
        assert _html_findings(fmt, text) == []
        rendered = lxml_html.fragment_fromstring(text, create_parent="div")
        assert rendered.find(".//img") is None  # text, not a live tag...
        assert "onerror=alert(1)" in rendered.text_content()  # ...shown as written
    for text in fields["AT&T results"]:
        assert "AT&amp;T" in text and _html_findings(fmt, text) == []
        assert "AT&T" in lxml_html.fragment_fromstring(text, create_parent="div").text_content()
    if fmt == "rss":  # the defect: the plain summary went into <description> unescaped
        root = etree.fromstring(body)
        item = next(i for i in root.iter("item") if i.findtext("title") == SCRIPTED)
        assert item.findtext("description") == html.escape(f"Plain text: {SCRIPTED} is not markup")


# -- item 10: Atom that readers read as meant ---------------------------------------------------


def test_atom_entries_carry_their_own_link_first_and_a_complete_source(
    publisher: Publisher,
) -> None:
    for fmt in ("atom", "rss"):
        body = publisher.feed("feeds", "copies", fmt).body
        assert _validator_findings(fmt, body) == [], fmt
    root = etree.fromstring(publisher.feed("feeds", "copies", "atom").body)
    entries = list(root.iter(f"{ATOM}entry"))
    story = next(e for e in entries if e.findtext(f"{ATOM}title") == "Herald story 3")
    links = list(story.iter(f"{ATOM}link"))
    assert links[0].get("href") == "https://news.example/h3"  # what sfeed takes as the link
    source = story.find(f"{ATOM}source")
    assert source is not None
    assert source.findtext(f"{ATOM}title") == "Herald"
    assert source.findtext(f"{ATOM}updated") == story.findtext(f"{ATOM}updated")
    [feed_link] = source.findall(f"{ATOM}link")
    assert (feed_link.get("rel"), feed_link.get("href")) == ("self", "https://herald.example/rss")
    same_source = {
        e.findtext(f"{ATOM}source/{ATOM}id")
        for e in root.iter(f"{ATOM}entry")
        if e.findtext(f"{ATOM}source/{ATOM}title") == "Herald"
    }
    assert len(same_source) == 1  # one id per source feed


def test_entries_are_dated_by_their_own_dates_not_by_the_poll(
    publisher: Publisher, clock: Clock
) -> None:
    """fill() stores six herald stories in one poll; each keeps its own published date, and an
    entry whose feed gave an updated date shows that one."""
    root = etree.fromstring(publisher.feed("feeds", "copies", "atom").body)
    updated = {
        e.findtext(f"{ATOM}title"): e.findtext(f"{ATOM}updated") for e in root.iter(f"{ATOM}entry")
    }
    herald = [updated[f"Herald story {n}"] for n in range(6)]
    assert herald == [(START + timedelta(hours=n)).isoformat() for n in range(6)]
    assert clock.now.isoformat() not in updated.values()  # nothing carries the time it was stored
    assert updated[SCRIPTED] == "2026-11-20T09:30:00+00:00"  # its feed's <updated>
    document = json.loads(publisher.feed("feeds", "copies", "json").body)
    modified = {i["title"]: i["date_modified"] for i in document["items"]}
    assert modified["Herald story 2"] == "2026-11-20T10:00:00Z"
    assert modified[SCRIPTED] == "2026-11-20T09:30:00Z"


def test_a_feed_stored_with_unchanged_items_keeps_its_bytes(
    storage: Storage, config: Config, publisher: Publisher, clock: Clock
) -> None:
    """Dating entries by their own dates keeps documents stable: polling the same items again
    later changes nothing a reader sees."""
    before = {fmt: publisher.feed("feeds", "all", fmt).body for fmt in ("atom", "rss", "json")}
    clock.advance(hours=3)
    again: list[Entry] = [BELL, ONLY_CONTROLS]
    storage.save_entries("herald", again, Processor(config))
    after = {fmt: publisher.feed("feeds", "all", fmt).body for fmt in ("atom", "rss", "json")}
    assert after == before
