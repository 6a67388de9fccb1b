"""Sections and topics: which one section and which topics an item is filed under, and why.

Every decision carries its reason (the rule and the words that matched), which storage keeps and
`aggregator explain` shows, so an editor can see why an item landed where it did and fix the rule.

Section: the first section (in file order) with a path rule matching the item's link; else the
first whose category terms equal one of the feed's own categories; else the source's section.
Topics: every topic whose keywords hit at least `min_matches` times in its fields and none of
whose `exclude` terms appear there, plus the source's fixed topics.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any

from aggregator.config import Config, Source, Topic
from aggregator.process.terms import Hit, PathRule, TermIndex, split_link
from aggregator.process.text import ItemText, field_group
from aggregator.types import Entry

_CATEGORIES_REMEMBERED = 20_000  # distinct category lists whose section is remembered
STORED_HITS = 10  # hits kept with an item for each topic (the status page and `explain` show them)


@dataclass(frozen=True)
class SectionChoice:
    """The section an item is filed under and the rule that chose it."""

    section_id: str
    rule: str  # "path", "category" or "source"
    pattern: str = ""  # the path pattern or category term
    matched: str = ""  # the link or category it matched
    where: str = ""  # a category rule: "" for the feed's categories, else the page's field

    def as_json(self) -> dict[str, str]:
        found = {"rule": self.rule, "pattern": self.pattern, "matched": self.matched}
        return {**found, "where": self.where} if self.where else found

    def stored(self) -> dict[str, str] | None:
        """What storage keeps: nothing for the common case, the source's own section."""
        return None if self.rule == "source" else self.as_json()

    @classmethod
    def from_json(cls, section_id: str, data: Mapping[str, Any] | None) -> SectionChoice:
        data = data or {}
        return cls(
            section_id,
            str(data.get("rule", "source")),
            str(data.get("pattern", "")),
            str(data.get("matched", "")),
            str(data.get("where", "")),
        )

    def describe(self) -> str:
        if self.rule == "path":
            return f"its link {self.matched} matches the path rule {self.pattern!r}"
        if self.rule == "category" and self.where:
            return (
                f"the publisher files it under {self.matched!r} in {self.where} "
                f"(category rule {self.pattern!r})"
            )
        if self.rule == "category":
            return f"the feed files it under {self.matched!r} (category rule {self.pattern!r})"
        return "its source's section"


def _distinct(hits: Sequence[Hit], limit: int | None = None) -> list[Hit]:
    """`TopicVerdict.distinct` of these hits."""
    seen: set[tuple[str, str, str]] = set()
    found: list[Hit] = []
    # a scan repeats one hit object for a word repeated as written: each is looked at once
    # (where there are a few, looking again costs less than the table)
    unique = hits if len(hits) < 8 else dict(zip(map(id, hits), hits, strict=True)).values()
    for hit in unique:
        key = (hit.term, hit.field, hit.text)
        if key not in seen:
            seen.add(key)
            found.append(hit)
            if len(found) == limit:
                break
    return found


def _json_text(rule: str, hits: Sequence[Hit], more: int = 0) -> str:
    """`TopicVerdict.as_json_text` of a verdict with this rule and these hits."""
    kept = _distinct(hits, STORED_HITS)
    listed = ", ".join(h.as_json_text() for h in kept)
    matches = len(hits) + more
    count = f', "count": {matches}' if matches > len(kept) else ""
    return f'{{"rule": {_quoted(rule)}, "hits": [{listed}]{count}}}'


@dataclass(frozen=True)
class TopicVerdict:
    """Whether an item is about a topic, and why (or why not)."""

    topic_id: str
    assigned: bool
    rule: str  # "keywords" or "source"
    hits: tuple[Hit, ...] = ()
    excluded_by: Hit | None = None
    needed: int = 1
    more: int = 0  # matches beyond the hits kept in storage

    def distinct(self, limit: int | None = None) -> list[Hit]:
        """The hits without repeats (the same words for the same term in the same field), in
        order: "'Gaza' in summary" said once, however often the summary says it."""
        return _distinct(self.hits, limit)

    @property
    def matches(self) -> int:
        """How many times the topic's terms matched, repeats included."""
        return len(self.hits) + self.more

    def as_json(self) -> dict[str, Any]:
        """What storage keeps: the first STORED_HITS distinct hits (enough to see why), and how
        many matches there were when that is more."""
        kept = self.distinct(STORED_HITS)
        stored: dict[str, Any] = {"rule": self.rule, "hits": [hit.as_json() for hit in kept]}
        if self.matches > len(kept):
            stored["count"] = self.matches
        return stored

    def as_json_text(self) -> str:
        """`as_json` as the JSON text `json.dumps` writes of it (what storage keeps), built
        directly: the reasons of a first poll's items, made as dicts in a helper process,
        pickled to the poller and encoded there, were a tenth of the poller's time."""
        return _json_text(self.rule, self.hits, self.more)

    @classmethod
    def from_json(cls, topic_id: str, data: Mapping[str, Any]) -> TopicVerdict:
        hits = tuple(
            Hit(str(h.get("term", "")), str(h.get("field", "")), str(h.get("text", "")))
            for h in data.get("hits", ())
        )
        count = data.get("count")
        more = count - len(hits) if isinstance(count, int) and count > len(hits) else 0
        return cls(topic_id, True, str(data.get("rule", "keywords")), hits, more=more)

    def describe(self) -> str:
        if self.rule == "source":
            return "every item of its source gets this topic"
        shown = self.distinct()
        words = ", ".join(f"{h.text!r} ({h.term!r} in {h.field})" for h in shown) or "none"
        if self.matches > len(shown):
            words += f" ({self.matches} matches in all)"
        if self.excluded_by is not None:
            hit = self.excluded_by
            return f"matched {words}, but {hit.text!r} ({hit.term!r} in {hit.field}) excludes it"
        if not self.assigned:
            if not self.hits:
                return "no keyword matched"
            return f"matched {words}: {self.matches} of the {self.needed} matches needed"
        return f"matched {words}"


@dataclass(frozen=True)
class Categories:
    """What categorising one item decided."""

    section: SectionChoice
    topics: tuple[TopicVerdict, ...] = field(default=())

    @property
    def topic_ids(self) -> tuple[str, ...]:
        return tuple(t.topic_id for t in self.topics)


_UNKNOWN = SectionChoice("", "")  # not remembered yet


class Categoriser:
    """The section and topic rules of one config, compiled once.

    Every topic's keywords and exclusions go into one term index, so an item's words are looked
    up once for all topics (a config with many topics costs little more than one with a few).
    """

    def __init__(self, config: Config) -> None:
        self._paths = [(s.id, PathRule(p)) for s in config.sections for p in s.paths]
        # most links match no rule: one search over every rule's path says so at once
        self._any_path = (
            re.compile("|".join(f"(?:{rule.path_pattern})" for _, rule in self._paths))
            if self._paths
            else None
        )
        mapped = [s for s in config.sections if s.categories]
        self._category_sections = [s.id for s in mapped]
        self._categories = TermIndex([s.categories for s in mapped], whole=True)
        self._topics: list[Topic] = list(config.topics)
        self._index = TermIndex([g for t in self._topics for g in (t.keywords, t.exclude)])
        self._fields = tuple(f for f in ItemText.FIELDS if any(f in t.fields for t in self._topics))
        if self._fields == ItemText.FIELDS:  # (ItemText makes them all at once)
            self._fields = ItemText.FIELDS
        # topics matching in every field scanned (the default) take their hits unfiltered
        self._every_field = [set(self._fields) <= set(t.fields) for t in self._topics]
        self._sources: dict[str, Source] = {s.id: s for s in config.sources}
        self._fixed = {s.id: frozenset(s.topics) for s in config.sources if s.topics}
        # most items take their source's section: one choice a source, made once (a frozen
        # dataclass of five fields cost 1.8 us to make, an item)
        self._source_sections = {s.id: SectionChoice(s.section, "source") for s in config.sources}
        self._by_categories: dict[
            tuple[tuple[str, ...], tuple[tuple[str, str], ...]], SectionChoice | None
        ] = {}

    def section(self, source_id: str, entry: Entry, text: ItemText | None = None) -> SectionChoice:
        any_path = self._any_path
        if any_path is not None:  # (there are path rules)
            link, canonical = entry.link, entry.canonical_link
            # Most links hold no rule's path: one search of the link says so, before splitting
            # it. A link's lowered path is part of it lowered where it is ASCII (lowering is
            # then a letter at a time) without tabs or line breaks (which urlsplit drops).
            links: list[tuple[str, tuple[str, str]]] = []
            for given in (link, canonical) if canonical and canonical != link else (link,):
                if given and (
                    any_path.search(given.lower()) is not None
                    or not given.isascii()
                    or "\n" in given
                    or "\t" in given
                    or "\r" in given
                ):
                    links.append((given, split_link(given)))
            if links and not any(any_path.search(path) for _, (_, path) in links):
                links = []  # no rule's path is in any link: no rule matches
            for section_id, rule in self._paths if links else ():
                for given, parts in links:
                    if rule.matches_parts(*parts):
                        return SectionChoice(section_id, "path", rule.pattern, given)
        if self._category_sections and (entry.categories or entry.publisher):
            # A feed files its items under the same few categories again and again: what they
            # decide is remembered, by the categories and the publisher's filing.
            key = (entry.categories, entry.publisher)
            chosen = self._by_categories.get(key, _UNKNOWN)
            if chosen is _UNKNOWN:
                chosen = self._by_category(text or ItemText(entry))
                if len(self._by_categories) >= _CATEGORIES_REMEMBERED:
                    self._by_categories = {}
                self._by_categories[key] = chosen
            if chosen is not None:
                return chosen
        chosen = self._source_sections.get(source_id)
        if chosen is None:
            source = self._sources.get(source_id)
            chosen = SectionChoice(source.section if source else "", "source")
        return chosen

    def _by_category(self, text: ItemText) -> SectionChoice | None:
        """The section the feed's own categories give, else the publisher's filing on its page."""
        found = self._categories.scan(text.fields(("categories", "publisher")))
        for section_id, hits in zip(self._category_sections, found, strict=True):
            if hits:
                first = min(hits, key=lambda h: h.field != "categories")
                where = "" if first.field == "categories" else first.field
                return SectionChoice(section_id, "category", first.term, first.text, where)
        return None

    def verdicts(
        self,
        source_id: str,
        entry: Entry,
        text: ItemText | None = None,
        *,
        only_assigned: bool = False,
    ) -> list[TopicVerdict]:
        """One verdict per topic in the config, assigned or not (for `explain`); with
        `only_assigned`, just the topics the item gets (what filing needs)."""
        return [
            TopicVerdict(
                topic.id,
                assigned,
                rule,
                tuple(hits),
                excluded,
                1 if rule == "source" else topic.min_matches,
            )
            for topic, assigned, rule, hits, excluded in self._judged(
                source_id, text or ItemText(entry), only_assigned
            )
        ]

    def _judged(
        self, source_id: str, text: ItemText, only_assigned: bool
    ) -> list[tuple[Topic, bool, str, Sequence[Hit], Hit | None]]:
        """Each topic's verdict as its parts (topic, assigned, rule, hits, excluded by): filing
        makes no verdict of them (`filed`)."""
        fixed = self._fixed.get(source_id, ())
        found = self._index.scan(text.fields(self._fields)) if self._topics else []
        judged: list[tuple[Topic, bool, str, Sequence[Hit], Hit | None]] = []
        if only_assigned and not fixed and not any(found):  # (half the items: no topic)
            return judged
        topics = self._topics
        numbers: Iterable[int] = range(len(topics))
        if only_assigned and not fixed:  # only the topics with a hit (one or two an item)
            numbers = itertools.compress(numbers, found[::2])
        for number in numbers:
            topic = topics[number]
            if topic.id in fixed:
                judged.append((topic, True, "source", (), None))
                continue
            hits: Sequence[Hit] = found[2 * number]
            if only_assigned and not hits:
                continue
            if not self._every_field[number]:
                hits = [h for h in hits if field_group(h.field) in topic.fields]
            if len(hits) < topic.min_matches or not hits:
                if not only_assigned:
                    judged.append((topic, False, "keywords", hits, None))
                continue
            excluded = next(
                (h for h in found[2 * number + 1] if field_group(h.field) in topic.fields), None
            )
            judged.append((topic, excluded is None, "keywords", hits, excluded))
        return judged

    def filed(
        self, source_id: str, entry: Entry, text: ItemText
    ) -> tuple[SectionChoice, dict[str, str]]:
        """`categorise` as storage keeps it: the section, and the reason of each topic the item
        gets as JSON text (`TopicVerdict.as_json_text`), made without the verdicts."""
        section = self.section(source_id, entry, text)
        topics = {
            topic.id: _json_text(rule, hits)
            for topic, assigned, rule, hits, _ in self._judged(source_id, text, True)
            if assigned
        }
        return section, topics

    def categorise(self, source_id: str, entry: Entry, text: ItemText | None = None) -> Categories:
        text = text or ItemText(entry)
        section = self.section(source_id, entry, text)
        verdicts = self.verdicts(source_id, entry, text, only_assigned=True)
        topics = tuple(v for v in verdicts if v.assigned)
        return Categories(section, topics)
