"""What the service publishes: every configured output, plus a feed per section and per topic.

Each kind has its own URL space (`/feeds/ID`, `/sections/ID`, `/topics/ID`), so an output and a
section may share an id. The catalog is built from a config and never changes; a new config makes
a new catalog.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from aggregator.config import Config, Filter
from aggregator.process.filters import ItemFilter


class Kind(StrEnum):
    FEEDS = "feeds"
    SECTIONS = "sections"
    TOPICS = "topics"
    SEARCH = "search"  # a reader's search, published as a feed too (never in the catalog)


CATALOGUED = (Kind.FEEDS, Kind.SECTIONS, Kind.TOPICS)  # the kinds the index and OPML list
KIND_TITLES = {
    Kind.FEEDS: "Feeds",
    Kind.SECTIONS: "Sections",
    Kind.TOPICS: "Topics",
    Kind.SEARCH: "Search",
}

MEDIA_TYPES = {
    "atom": "application/atom+xml",
    "rss": "application/rss+xml",
    "json": "application/feed+json",
}
FORMAT_NAMES = {"atom": "Atom", "rss": "RSS", "json": "JSON Feed"}


@dataclass(frozen=True)
class Publication:
    """One published feed: its place, its words, and which items it takes."""

    kind: Kind
    id: str
    title: str
    description: str
    filter: Filter
    limit: int
    formats: tuple[str, ...]

    @property
    def key(self) -> str:
        """`feeds/ID`: the feed's path without the leading slash or a format."""
        return f"{self.kind}/{self.id}"


class Catalog:
    """The publications of one config, in the order the index lists them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        defaults = config.defaults
        found: list[Publication] = [
            Publication(
                Kind.FEEDS,
                output.id,
                output.title,
                output.description,
                output.filter,
                output.limit or defaults.limit,
                output.formats or defaults.formats,
            )
            for output in config.outputs
        ]
        if config.publishing.section_feeds:
            found += [
                self._automatic(
                    Kind.SECTIONS, s.id, s.title, s.description, Filter(sections=(s.id,))
                )
                for s in config.sections
            ]
        if config.publishing.topic_feeds:
            found += [
                self._automatic(Kind.TOPICS, t.id, t.title, t.description, Filter(topics=(t.id,)))
                for t in config.topics
            ]
        self._by_key = {(p.kind, p.id): p for p in found}
        self._filters = {p.key: ItemFilter(p.filter) for p in found}
        self.section_titles = {s.id: s.title for s in config.sections}
        self.topic_titles = {t.id: t.title for t in config.topics}

    def _automatic(
        self, kind: Kind, pid: str, title: str, description: str, rules: Filter
    ) -> Publication:
        defaults = self.config.defaults
        return Publication(kind, pid, title, description, rules, defaults.limit, defaults.formats)

    def __iter__(self) -> Iterator[Publication]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, kind: str, publication_id: str) -> Publication | None:
        try:
            return self._by_key.get((Kind(kind), publication_id))
        except ValueError:
            return None

    def filter_of(self, publication: Publication) -> ItemFilter:
        return self._filters[publication.key]

    def of_kind(self, kind: Kind) -> list[Publication]:
        return [p for p in self if p.kind is kind]
