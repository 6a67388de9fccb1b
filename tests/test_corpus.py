"""Conformance on real-world samples from ../shared/corpus (feedparser's suite and feed-rs's set).

- every document goes through the parser without an exception (ParseError is a clean refusal);
- feedparser's own `Expect:` expressions about the fields we carry (title, link, id, author,
  dates, enclosures, tags) are evaluated against our entries, and most must hold;
- no sanitiser sample leaves unsafe HTML behind in anything we store.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from aggregator.exceptions import ParseError
from aggregator.feed.parse import ParsedFeed, parse_document
from aggregator.feed.sanitize import html_to_text
from aggregator.types import Entry
from tests.conftest import ROOT
from tests.support import UNSAFE

CORPUS = ROOT.parent / "shared" / "corpus"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BASE = "http://example.com/feed.xml"
pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"{CORPUS} is absent (a clone without ../shared)"
)

MODELLED = {
    "title",
    "link",
    "id",
    "author",
    "published_parsed",
    "updated_parsed",
    "enclosures",
    "tags",
    "description",
    "summary",
    "content",
}
MODELLED_PARTS = {"content": {"value"}, "enclosures": {"href", "type", "length"}, "tags": {"term"}}
_FIELD = re.compile(r"entries\[\d+\]\['(\w+)'\](?:\[\d+\]\['(\w+)'\])?")


@dataclass(frozen=True)
class Sample:
    path: Path
    description: str
    expect: str | None
    content_type: str | None
    location: str | None


def _header(text: str, name: str) -> str | None:
    match = re.search(rf"^{name}:\s*(.+?)\s*$", text, re.MULTILINE | re.IGNORECASE)
    return match.group(1) if match else None


@cache
def samples() -> list[Sample]:
    found = []
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file() or path.name.startswith("LICENSE") or path.suffix in (".md", ".txt"):
            continue
        head = path.read_bytes()[:2000].decode("utf-8", "replace")
        comment = head.split("-->", 1)[0] if "<!--" in head else ""
        headers = {}
        for line in re.findall(r"^Header:\s*(.+)$", comment, re.MULTILINE):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        found.append(
            Sample(
                path,
                _header(comment, "Description") or "",
                _header(comment, "Expect"),
                headers.get("content-type"),
                headers.get("content-location"),
            )
        )
    return found


def _base(path: Path) -> str:
    """feedparser's own suite serves its http_* samples from this address."""
    if path.name.startswith("http_") and "feedparser" in path.parts:
        return "http://127.0.0.1:8097/tests/" + str(path.relative_to(CORPUS / "feedparser"))
    return BASE


def parse(sample: Sample) -> ParsedFeed | None:
    try:
        return parse_document(
            sample.path.read_bytes(),
            sample.location or _base(sample.path),
            NOW,
            sample.content_type,
        )
    except ParseError:
        return None


def test_the_corpus_is_there() -> None:
    assert len(samples()) > 2000


def test_every_sample_parses_or_is_refused_cleanly() -> None:
    crashed = []
    for sample in samples():
        try:
            parse(sample)
        except Exception as exc:  # any exception but ParseError is a bug
            crashed.append(f"{sample.path.relative_to(CORPUS)}: {type(exc).__name__}: {exc}")
    assert crashed == []


class _Text(str):
    """Our plain-text title, equal to feedparser's expectation once that is made plain text."""

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        # feedparser keeps a title's markup (or its literal brackets, for text/plain titles)
        return isinstance(other, str) and (
            str.__eq__(self, other) or str.__eq__(self, html_to_text(other))
        )

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


class _Html(str):
    """Our sanitised HTML, equal to feedparser's expectation when both say the same text.

    The two sanitisers write equivalent markup differently (attribute order, quoting, rel), so
    the comparison is on what a reader sees.
    """

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        # a text/plain value is escaped by us and kept literal by feedparser
        return isinstance(other, str) and html_to_text(self) in (other, html_to_text(other))

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


def _struct(moment: datetime | None) -> time.struct_time | None:
    return moment.astimezone(UTC).utctimetuple() if moment else None


def _as_feedparser(entry: Entry) -> dict[str, Any]:
    """Our entry in the shape feedparser's expectations read."""
    shaped: dict[str, Any] = {
        "title": _Text(entry.title),
        "link": entry.link or "",
        "id": entry.guid or "",
        "enclosures": [
            {"href": e.url, "type": e.type, "length": str(e.length or "")} for e in entry.enclosures
        ],
        "tags": [{"term": c} for c in entry.categories],
        "description": _Html(entry.summary or entry.content),
        "summary": _Html(entry.summary or entry.content),
        "content": [{"value": _Html(entry.content or entry.summary)}],
    }
    if entry.authors:
        shaped["author"] = entry.authors[0]
    if entry.published:
        shaped["published_parsed"] = _struct(entry.published)
    if entry.updated:
        shaped["updated_parsed"] = _struct(entry.updated)
    return shaped


def test_feedparser_expectations_hold_for_the_fields_we_carry() -> None:
    applicable, held, failed = 0, 0, []
    for sample in samples():
        expect = sample.expect
        if not expect or "feedparser" not in str(sample.path) or "/sanitize/" in str(sample.path):
            continue
        found = _FIELD.findall(expect)
        fields = {f for f, _ in found}
        parts_ok = all(not p or p in MODELLED_PARTS.get(f, set()) for f, p in found)
        if not fields or not fields <= MODELLED or not parts_ok or "feed[" in expect:
            continue
        applicable += 1
        parsed = parse(sample)
        entries = [_as_feedparser(e) for e in parsed.entries] if parsed else []
        names = {"entries": entries, "bozo": 0}
        try:
            ok = bool(eval(expect, {"__builtins__": {"ord": ord, "len": len}}, names))
        except (KeyError, IndexError, TypeError):
            ok = False
        if ok:
            held += 1
        else:
            failed.append(f"{sample.path.relative_to(CORPUS)}: {expect}")
    share = held / applicable
    print(f"\nfeedparser expectations on our entries: {held} of {applicable} hold ({share:.1%})")
    assert applicable >= 190
    assert share >= 0.95, "\n".join(failed)


def test_no_unsafe_html_survives() -> None:
    leaks = []
    checked = 0
    for sample in samples():
        parsed = parse(sample)
        for entry in parsed.entries if parsed else ():
            for field in (entry.summary, entry.content):
                checked += bool(field)
                if field and UNSAFE.search(field):
                    leaks.append(f"{sample.path.relative_to(CORPUS)}: {field[:200]}")
    assert checked >= 800  # non-empty HTML fields looked at
    assert leaks == []
