"""Filters: which items a source keeps, and which an output or digest takes.

Source filters run before storage (a dropped entry is not stored; it comes back if the rule is
loosened while the entry is still in its feed). Output filters run when items are selected. Both
use the same terms as topics, looked for in title, summary, content and categories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from aggregator.config import Filter, Source
from aggregator.process.terms import Terms
from aggregator.process.text import ItemText
from aggregator.types import Entry, Item, Selection


def language_matches(language: str | None, wanted: Sequence[str]) -> bool:
    """`en` takes `en`, `en-GB` and `en_us`; an item without a language is taken."""
    if not wanted or not language:
        return True
    primary = language.lower().replace("_", "-")
    return any(primary == w or primary.startswith(w + "-") for w in wanted)


@dataclass(frozen=True)
class Rejection:
    """Why a filter left an item out, for logs and `explain`."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


class EntryFilter:
    """Include and exclude terms, a minimum length in words, and languages."""

    def __init__(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        min_words: int = 0,
        languages: Sequence[str] = (),
    ) -> None:
        self._include = Terms(include)
        self._exclude = Terms(exclude)
        self._min_words = min_words
        self._languages = tuple(languages)

    @classmethod
    def of_source(cls, source: Source) -> EntryFilter:
        return cls(source.include, source.exclude, source.min_words, source.languages)

    @classmethod
    def of_filter(cls, selection: Filter) -> EntryFilter:
        return cls(selection.include, selection.exclude, selection.min_words, selection.languages)

    def __bool__(self) -> bool:
        return bool(self._include or self._exclude or self._min_words or self._languages)

    def rejects(self, entry: Entry, text: ItemText | None = None) -> Rejection | None:
        """Why the entry is left out, or None when it passes."""
        if not self:
            return None
        if not language_matches(entry.language, self._languages):
            return Rejection("languages", f"{entry.language} is not one of {self._languages}")
        text = text or ItemText(entry)
        if self._min_words and text.words < self._min_words:
            return Rejection("min_words", f"{text.words} words, fewer than {self._min_words}")
        if self._exclude:
            hit = self._exclude.first(text.fields())
            if hit is not None:
                return Rejection("exclude", f"{hit.text!r} matches {hit.term!r} in {hit.field}")
        if self._include and self._include.first(text.fields()) is None:
            return Rejection("include", "none of the include terms matches")
        return None


class ItemFilter:
    """An output's or digest's choice of items: sections, topics, sources, then terms."""

    def __init__(self, selection: Filter) -> None:
        # what storage can select by itself; `accepts_text` does the rest
        self.selection = Selection(
            selection.sections, selection.topics, selection.sources, selection.every_item
        )
        self._terms = EntryFilter.of_filter(selection)
        self.max_age = selection.max_age

    def accepts_text(self, item: Item) -> bool:
        return self._terms.rejects(item.entry) is None

    def accepts(self, item: Item) -> bool:
        return self.selection.matches(item) and self.accepts_text(item)

    def selection_at(self, now: datetime) -> Selection:
        """The storage selection at `now`: with a maximum age, only items first seen since (an
        item is first seen no earlier than it is published, so this bounds the scan)."""
        if self.max_age is None:
            return self.selection
        return replace(self.selection, seen_since=now - self.max_age)

    def accepts_at(self, item: Item, now: datetime) -> bool:
        """The further test storage cannot run: terms, words, languages and publication age."""
        if self.max_age is not None and item.published < now - self.max_age:
            return False
        return self.accepts_text(item)
