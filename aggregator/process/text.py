"""Text as the matcher sees it: folded (case, accents, Arabic letter variants) and split into words.

Editors write `Turkiye` and mean `Türkiye`, write `Gaza` and mean `غزة` with or without its
vowel marks, so matching happens on a folded copy: NFKD, combining marks removed, case folded,
and the few letters that casefolding leaves apart brought together (Turkish dotless i, Arabic
alef, ya and ta marbuta variants, tatweel). A folded text keeps only its words, joined by one
space, so a phrase matches across any punctuation or line break.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from aggregator.sanitize import html_to_text
from aggregator.types import Entry


def _mark_ranges() -> str:
    """A regex class of every combining mark, built once from the Unicode database."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x300, min(sys.maxunicode, 0x20000)):
        if unicodedata.combining(chr(code)) or unicodedata.category(chr(code)) == "Mn":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


_MARKS_CLASS = _mark_ranges()
# A word: letters and digits, with any marks inside it (Arabic vowel marks split nothing).
WORD = re.compile(rf"[\w{_MARKS_CLASS}]+")
# A word of a term an editor wrote, where `*` stands for any letters.
PATTERN_WORD = re.compile(rf"[\w{_MARKS_CLASS}*]+")
_LETTERS = str.maketrans(
    {
        "\u0131": "i",  # Turkish dotless i (capital dotted I folds to i through NFKD)
        "\u0623": "\u0627",  # Arabic alef with hamza above -> alef
        "\u0625": "\u0627",  # alef with hamza below -> alef
        "\u0622": "\u0627",  # alef with madda -> alef
        "\u0671": "\u0627",  # alef wasla -> alef
        "\u0649": "\u064a",  # alef maqsura -> ya
        "\u0629": "\u0647",  # ta marbuta -> ha
        "\u0640": None,  # tatweel, a stretching stroke
        "_": " ",  # \w counts the underscore as a letter; readers do not
    }
)


# One translation table: drop every combining mark, then bring the letters above together.
_FOLD = {
    code: None
    for code in range(0x300, min(sys.maxunicode, 0x20000))
    if unicodedata.combining(chr(code)) or unicodedata.category(chr(code)) == "Mn"
} | _LETTERS
_MARKS_ONLY = {code: None for code in _FOLD if code not in _LETTERS}
_FOLDED_WORD = re.compile(r"\w+")  # folded text has no marks left, so plain \w+ will do


def fold(text: str) -> str:
    """Lower case without accents or marks; the same words, not the same characters."""
    if text.isascii():
        return text.lower().replace("_", " ")
    return unicodedata.normalize("NFKD", text).casefold().translate(_FOLD)


_MEMO_LIMIT = 200_000
_memo: dict[str, str] = {}


def folded_words(text: str) -> str:
    """The folded words of `text` joined by single spaces.

    Text that is not plain ASCII is folded a whitespace-separated token at a time, each
    remembered: folding (NFKD, a translation table) costs ten times more than looking up a token
    seen before, and news repeats its vocabulary. Folding never joins or splits across spaces,
    so the result is the same as folding the whole text.
    """
    if text.isascii():
        return " ".join(_FOLDED_WORD.findall(text.lower().replace("_", " ")))
    global _memo
    memo = _memo
    out = []
    for token in text.split():
        folded = memo.get(token)
        if folded is None:
            folded = " ".join(_FOLDED_WORD.findall(fold(token)))
            if len(memo) >= _MEMO_LIMIT:
                memo = _memo = {}
            memo[token] = folded
        if folded:
            out.append(folded)
    return " ".join(out)


def word_count(text: str) -> int:
    return len(WORD.findall(text))


@dataclass(frozen=True)
class Field:
    """One part of an item (title, summary, ...) as plain text, with its folded words."""

    name: str
    text: str

    @cached_property
    def folded(self) -> str:
        return folded_words(self.text)

    @cached_property
    def words(self) -> list[str]:
        return self.folded.split(" ") if self.folded else []

    @cached_property
    def _spans(self) -> list[tuple[int, int]] | None:
        """Where each folded word is in the original text; None when folding changed the
        number of words (NFKD splits a few characters, such as fractions, in two)."""
        text = self.text
        plain = text.isascii() or len(text.translate(_MARKS_ONLY)) == len(text)
        spans = [m.span() for m in (_FOLDED_WORD if plain else WORD).finditer(text)]
        if len(spans) != len(self.words) or "_" in text:
            return None
        return spans

    def original(self, first: int, last: int) -> str:
        """Words `first` to `last` (inclusive) as the original text wrote them, for showing why
        an item matched (the folded words when the two cannot be lined up)."""
        spans = self._spans
        if spans is None:
            return " ".join(self.words[first : last + 1])
        return self.text[spans[first][0] : spans[last][1]]


class ItemText:
    """The matchable parts of one entry, converted to plain text and folded once, on demand."""

    FIELDS = ("title", "summary", "content", "categories")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self._fields: dict[str, tuple[Field, ...]] = {}

    def fields(self, names: Iterable[str] = FIELDS) -> list[Field]:
        found: list[Field] = []
        for name in names:
            if name not in self._fields:
                self._fields[name] = self._make(name)
            found.extend(self._fields[name])
        return found

    def _make(self, name: str) -> tuple[Field, ...]:
        entry = self.entry
        if name == "title":
            return (Field("title", entry.title),)
        if name == "summary":
            return (Field("summary", html_to_text(entry.summary)),)
        if name == "content":
            return (Field("content", html_to_text(entry.content)),)
        if name == "categories":
            return tuple(Field("categories", category) for category in entry.categories)
        raise ValueError(f"no field {name!r}")

    @cached_property
    def words(self) -> int:
        """Length of the item in words: title and the longer of summary and content."""
        body = max(self.fields(("summary",))[0].text, self.fields(("content",))[0].text, key=len)
        return word_count(self.entry.title) + word_count(body)
