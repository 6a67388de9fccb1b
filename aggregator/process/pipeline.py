"""The processing stage in one place: a source's filters, then filing (section, topics,
fingerprint) for storage, and the story index storage links new items with.

The Poller hands each poll's entries to `keep`; storage calls `file` for the entries that are new
or edited (filing every unchanged entry on every poll would be wasted work).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aggregator.config import Config
from aggregator.process.categorise import Categories, Categoriser
from aggregator.process.filters import EntryFilter, Rejection
from aggregator.process.text import ItemText
from aggregator.types import Entry, Filing

if TYPE_CHECKING:
    from aggregator.process.dedupe import SimilarityIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kept:
    """What a source's filters let through, and what they dropped with the reason."""

    entries: tuple[Entry, ...]
    dropped: tuple[tuple[Entry, Rejection], ...] = ()


class Processor:
    """The rules of one config, compiled; `configure` swaps them, keeping the story index when
    its settings did not change (rebuilding it means reading every fingerprint in the window)."""

    def __init__(self, config: Config, *, index: bool = True) -> None:
        """`index=False`: fingerprints are still made, but no story index is kept (a helper
        process files for the poller, which holds the index)."""
        self._index: SimilarityIndex | None = None
        self._keeps_index = index
        self._wants_index = False
        self._making = threading.Lock()
        self.configure(config)

    def configure(self, config: Config) -> None:
        self.config = config
        self.categoriser = Categoriser(config)
        # Sources with the same filter share it (most have none): building a term index per
        # source cost a start-up of 1,000 sources a seventh of a second, in each process.
        shared: dict[tuple[object, ...], EntryFilter] = {}
        self._filters = {}
        for source in config.sources:
            key = (source.include, source.exclude, source.min_words, source.languages)
            if key not in shared:
                shared[key] = EntryFilter.of_source(source)
            self._filters[source.id] = shared[key]
        # page sources: their selectors, for whoever parses their documents (prepare)
        self.pages = {source.id: source.page for source in config.sources if source.page}
        dedupe = config.dedupe
        self._fingerprints = dedupe.enabled
        self._wants_index = dedupe.enabled and self._keeps_index
        if self._index is not None and (
            not self._wants_index
            or self._index.threshold != dedupe.threshold
            or self._index.window != dedupe.window
        ):
            self._index = None

    @property
    def index(self) -> SimilarityIndex | None:
        """The story index, made when first asked for: numpy (the index's arrays and the
        fingerprints) is imported then, so a poll where every source answers 304 never pays
        for it."""
        if self._index is None and self._wants_index:
            with self._making:
                if self._index is None:
                    from aggregator.process.dedupe import SimilarityIndex

                    dedupe = self.config.dedupe
                    # 8 bits of each value: storage confirms what it finds (`confirm`)
                    self._index = SimilarityIndex(dedupe.threshold, dedupe.window, bits=8)
        return self._index

    def keep(self, source_id: str, entries: Iterable[Entry]) -> Kept:
        """Apply the source's include/exclude/min_words/languages filters."""
        entries = tuple(entries)
        rules = self._filters.get(source_id)
        if not rules:
            return Kept(entries)
        kept: list[Entry] = []
        dropped: list[tuple[Entry, Rejection]] = []
        for entry in entries:
            rejection = rules.rejects(entry)
            if rejection is None:
                kept.append(entry)
            else:
                dropped.append((entry, rejection))
        return Kept(tuple(kept), tuple(dropped))

    def categorise(self, source_id: str, entry: Entry) -> Categories:
        return self.categoriser.categorise(source_id, entry)

    def file(self, source_id: str, entry: Entry) -> Filing:
        return self.file_all(source_id, [entry])[0]

    def file_all(self, source_id: str, entries: Sequence[Entry]) -> list[Filing]:
        """`file` for each entry of one document, their fingerprints made together."""
        texts = [ItemText(entry) for entry in entries]
        # topics first: they fold whole fields, which fingerprints then reuse
        pairs = list(zip(entries, texts, strict=True))
        found = [self.categoriser.filed(source_id, e, t) for e, t in pairs]
        prints: list[bytes | None] = [None] * len(entries)
        if self._fingerprints and entries:
            from aggregator.process.fingerprint import fingerprints

            prints = fingerprints(pairs)
        return [
            Filing(
                section_id=section.section_id or None,
                section_reason=section.stored(),
                topics=topics,
                fingerprint=made,
            )
            for (section, topics), made in zip(found, prints, strict=True)
        ]
