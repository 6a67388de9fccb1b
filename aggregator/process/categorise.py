"""Sections and topics: which one section and which topics an item is filed under, and why.

Every decision carries its reason (the rule and the words that matched), which storage keeps and
`aggregator explain` shows, so an editor can see why an item landed where it did and fix the rule.

Section: the first section (in file order) with a path rule matching the item's link; else the
first whose category terms equal one of the feed's own categories; else the source's section.
Topics: every topic whose keywords hit at least `min_matches` times in its fields and none of
whose `exclude` terms appear there, plus the source's fixed topics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregator.config import Config, Source, Topic
from aggregator.process.terms import Hit, PathRule, Terms
from aggregator.process.text import ItemText
from aggregator.types import Entry


@dataclass(frozen=True)
class SectionChoice:
    """The section an item is filed under and the rule that chose it."""

    section_id: str
    rule: str  # "path", "category" or "source"
    pattern: str = ""  # the path pattern or category term
    matched: str = ""  # the link or category it matched

    def as_json(self) -> dict[str, str]:
        return {"rule": self.rule, "pattern": self.pattern, "matched": self.matched}

    @classmethod
    def from_json(cls, section_id: str, data: Mapping[str, Any] | None) -> SectionChoice:
        data = data or {}
        return cls(
            section_id,
            str(data.get("rule", "source")),
            str(data.get("pattern", "")),
            str(data.get("matched", "")),
        )

    def describe(self) -> str:
        if self.rule == "path":
            return f"its link {self.matched} matches the path rule {self.pattern!r}"
        if self.rule == "category":
            return f"the feed files it under {self.matched!r} (category rule {self.pattern!r})"
        return "its source's section"


@dataclass(frozen=True)
class TopicVerdict:
    """Whether an item is about a topic, and why (or why not)."""

    topic_id: str
    assigned: bool
    rule: str  # "keywords" or "source"
    hits: tuple[Hit, ...] = ()
    excluded_by: Hit | None = None
    needed: int = 1

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "hits": [hit.as_json() for hit in self.hits]}

    @classmethod
    def from_json(cls, topic_id: str, data: Mapping[str, Any]) -> TopicVerdict:
        hits = tuple(
            Hit(str(h.get("term", "")), str(h.get("field", "")), str(h.get("text", "")))
            for h in data.get("hits", ())
        )
        return cls(topic_id, True, str(data.get("rule", "keywords")), hits)

    def describe(self) -> str:
        if self.rule == "source":
            return "every item of its source gets this topic"
        words = ", ".join(f"{h.text!r} ({h.term!r} in {h.field})" for h in self.hits) or "none"
        if self.excluded_by is not None:
            hit = self.excluded_by
            return f"matched {words}, but {hit.text!r} ({hit.term!r} in {hit.field}) excludes it"
        if not self.assigned:
            if not self.hits:
                return "no keyword matched"
            return f"matched {words}: {len(self.hits)} of the {self.needed} matches needed"
        return f"matched {words}"


@dataclass(frozen=True)
class Categories:
    """What categorising one item decided."""

    section: SectionChoice
    topics: tuple[TopicVerdict, ...] = field(default=())

    @property
    def topic_ids(self) -> tuple[str, ...]:
        return tuple(t.topic_id for t in self.topics)


@dataclass(frozen=True)
class _TopicRule:
    topic: Topic
    keywords: Terms
    exclude: Terms


class Categoriser:
    """The section and topic rules of one config, compiled once."""

    def __init__(self, config: Config) -> None:
        self._paths = [(s.id, PathRule(p)) for s in config.sections for p in s.paths]
        self._categories = [
            (s.id, Terms(s.categories, whole=True)) for s in config.sections if s.categories
        ]
        self._topics = [_TopicRule(t, Terms(t.keywords), Terms(t.exclude)) for t in config.topics]
        self._sources: dict[str, Source] = {s.id: s for s in config.sources}
        self._known_topics = {t.id for t in config.topics}

    def section(self, source_id: str, entry: Entry, text: ItemText | None = None) -> SectionChoice:
        for section_id, rule in self._paths:
            for link in (entry.link, entry.canonical_link):
                if rule.matches(link):
                    return SectionChoice(section_id, "path", rule.pattern, link or "")
        if self._categories and entry.categories:
            fields = (text or ItemText(entry)).fields(("categories",))
            for section_id, terms in self._categories:
                hit = terms.first(fields)
                if hit is not None:
                    return SectionChoice(section_id, "category", hit.term, hit.text)
        source = self._sources.get(source_id)
        return SectionChoice(source.section if source else "", "source")

    def verdicts(
        self, source_id: str, entry: Entry, text: ItemText | None = None
    ) -> list[TopicVerdict]:
        """One verdict per topic in the config, assigned or not (for `explain`)."""
        text = text or ItemText(entry)
        source = self._sources.get(source_id)
        fixed = set(source.topics) if source else set()
        verdicts = []
        for rule in self._topics:
            topic = rule.topic
            if topic.id in fixed:
                verdicts.append(TopicVerdict(topic.id, True, "source"))
                continue
            verdicts.append(self._keywords(rule, text))
        return verdicts

    def _keywords(self, rule: _TopicRule, text: ItemText) -> TopicVerdict:
        topic = rule.topic
        if not rule.keywords:
            return TopicVerdict(topic.id, False, "keywords", needed=topic.min_matches)
        fields = text.fields(topic.fields)
        hits = tuple(rule.keywords.hits(fields))
        if len(hits) < topic.min_matches:
            return TopicVerdict(topic.id, False, "keywords", hits, needed=topic.min_matches)
        excluded = rule.exclude.first(fields) if rule.exclude else None
        return TopicVerdict(
            topic.id, excluded is None, "keywords", hits, excluded, needed=topic.min_matches
        )

    def categorise(self, source_id: str, entry: Entry, text: ItemText | None = None) -> Categories:
        text = text or ItemText(entry)
        section = self.section(source_id, entry, text)
        topics = tuple(v for v in self.verdicts(source_id, entry, text) if v.assigned)
        return Categories(section, topics)

    def topic_ids(self) -> Sequence[str]:
        return [rule.topic.id for rule in self._topics]
