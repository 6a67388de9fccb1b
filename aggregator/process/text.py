"""Text as the matcher sees it: folded (case, accents, Arabic letter variants) and split into words.

Editors write `Turkiye` and mean `Türkiye`, write `Gaza` and mean `غزة` with or without its
vowel marks, so matching happens on a folded copy: symbols dropped, NFKD, accents removed, case
folded, and the few letters that casefolding leaves apart brought together (Turkish dotless i,
Arabic alef, ya and ta marbuta variants, tatweel). A folded text keeps only its words, joined
by one space, so a phrase matches across any punctuation or line break. Words are what spaces
and punctuation separate: scripts written without spaces (Chinese, Japanese) have no words to
match on, and need `/regex/` terms.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from itertools import chain

from aggregator.feed.sanitize import html_to_text
from aggregator.process.unicode_ranges import Ranges, table
from aggregator.types import Entry


def _char_class(ranges: Ranges) -> str:
    """A regex character class body for these ranges of code points."""
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


# Marks of every script belong to the word they sit in (a Hindi vowel sign, an Arabic vowel
# mark): `\w` alone would split words at them.
_MARKS_CLASS = _char_class(table("marks"))
WORD = re.compile(rf"[\w{_MARKS_CLASS}]+")
# A word of a term an editor wrote, where `*` stands for any letters.
PATTERN_WORD = re.compile(rf"[\w{_MARKS_CLASS}*]+")
_ASCII_WORD = re.compile(r"\w+")

# Marks that are accents on a letter, dropped when folding: the combining diacritics used by
# Latin, Greek and Cyrillic, and the vowel and other points of Hebrew, Arabic and Syriac. The
# marks of other scripts (a Devanagari vowel sign, a Japanese voicing mark) are part of the
# spelling and stay.
_ACCENT_BLOCKS = (
    (0x0300, 0x036F),
    (0x0483, 0x0489),
    (0x0591, 0x05C7),
    (0x0610, 0x061A),
    (0x064B, 0x065F),
    (0x0670, 0x0670),
    (0x06D6, 0x06ED),
    (0x0711, 0x0711),
    (0x0730, 0x074A),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)
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
# Applied after NFKD and casefolding: accents dropped, the letters above brought together.
_FOLD: dict[int, str | int | None] = {
    code: None
    for first, last in _ACCENT_BLOCKS
    for code in range(first, last + 1)
    if unicodedata.category(chr(code)) in ("Mn", "Me")
}
_FOLD.update(_LETTERS)
# Applied before NFKD: symbols become spaces, or NFKD would turn "Apple™" into "appletm".
_SYMBOLS = dict.fromkeys(chain.from_iterable(range(a, b + 1) for a, b in table("symbols")), " ")


def fold(text: str) -> str:
    """Lower case without accents; the same words, not the same characters."""
    if text.isascii():
        return text.lower().replace("_", " ")
    decomposed = unicodedata.normalize("NFKD", text.translate(_SYMBOLS))
    return decomposed.casefold().translate(_FOLD)


_MEMO_LIMIT = 200_000
_memo: dict[str, str] = {}
_pieces: dict[str, tuple[str, bool]] = {}
_piece_words: dict[str, tuple[str, ...]] = {}  # a piece's words as written (WORD), for hits


def folded_words(text: str) -> str:
    """The folded words of `text` joined by single spaces."""
    return _folding(text)[0]


def _folding(text: str) -> tuple[str, bool]:
    """The folded words of `text` joined by single spaces, and whether each of its words (WORD)
    folds to exactly one word (so a word's place in the text is its place among the folded).

    Text that is not plain ASCII is folded a whitespace-separated piece at a time, each
    remembered: folding (NFKD, a translation table) costs ten times more than looking up a piece
    seen before, and news repeats its vocabulary. Folding never joins or splits across spaces,
    so the result is the same as folding the whole text.
    """
    if text.isascii():
        return " ".join(_ASCII_WORD.findall(text.lower().replace("_", " "))), True
    global _pieces, _piece_words
    out = []
    one_each = True
    pieces = _pieces
    for piece in text.split():
        found = pieces.get(piece)
        if found is None:
            words = tuple(WORD.findall(piece))
            found = (folded_token(piece), _one_each(words))
            if len(pieces) >= _MEMO_LIMIT:
                _pieces = pieces = {}
                _piece_words = {}
            pieces[piece] = found
            _piece_words[piece] = words
        if found[0]:
            out.append(found[0])
        if not found[1]:
            one_each = False
    return " ".join(out), one_each


def _one_each(words: Iterable[str]) -> bool:
    """Whether every word (WORD) of a whitespace-free piece folds to exactly one word."""
    for word in words:
        if not word.isascii() or "_" in word:
            folded = folded_token(word)
            if not folded or " " in folded:
                return False
    return True


def folded_token(token: str) -> str:
    """The folded words of one whitespace-free piece of text, remembered."""
    global _memo
    folded = _memo.get(token)
    if folded is None:
        folded = " ".join(WORD.findall(fold(token)))
        if len(_memo) >= _MEMO_LIMIT:
            _memo = {}
        _memo[token] = folded
    return folded


def word_count(text: str) -> int:
    return len(WORD.findall(text))


@dataclass(frozen=True)
class Field:
    """One part of an item (title, summary, ...) as plain text, with its folded words."""

    name: str
    text: str

    @cached_property
    def _ascii_words(self) -> list[str] | None:
        """The words of a plain ASCII text as written: folding them is lowering them, so one
        findall serves both the folded words and a hit's original text."""
        text = self.text
        return _ASCII_WORD.findall(text) if text.isascii() and "_" not in text else None

    @cached_property
    def _folding(self) -> tuple[str, bool]:
        written = self._ascii_words
        if written is not None:
            return " ".join(written).lower(), True
        return _folding(self.text)

    @cached_property
    def folded(self) -> str:
        return self._folding[0]

    @cached_property
    def words(self) -> list[str]:
        return self.folded.split(" ") if self.folded else []

    @cached_property
    def _spans(self) -> list[tuple[int, int]] | None:
        """Where each folded word is in the original text. An original word may fold to
        several (`5½` to `51 2`) or none (a tatweel): its place is repeated that many times.
        None if the two still do not line up."""
        text = self.text
        if text.isascii() and "_" not in text:
            spans = [m.span() for m in _ASCII_WORD.finditer(text)]
        else:
            spans = []
            for match in WORD.finditer(text):
                folded = folded_token(match.group())
                spans.extend([match.span()] * (folded.count(" ") + 1 if folded else 0))
        return spans if len(spans) == len(self.words) else None

    @cached_property
    def originals(self) -> list[str] | None:
        """Each word as the text wrote it, where every word of the text folds to exactly one
        (`École` to `ecole`, not `5½` to `51 2`): a findall, much cheaper than every word's place
        (`_spans`), and all a one-word hit needs. None where that does not hold."""
        text = self.text
        if "_" in text:
            return None
        if text.isascii():
            found: list[str] = self._ascii_words or []
        elif self._folding[1]:  # each word folds to exactly one (found while folding)
            try:  # the words of each piece, remembered while folding: no regex over the text
                found = list(chain.from_iterable(map(_piece_words.__getitem__, text.split())))
            except KeyError:  # the memo started afresh since
                found = WORD.findall(text)
        else:
            return None
        return found if len(found) == len(self.words) else None

    def original(self, first: int, last: int) -> str:
        """Words `first` to `last` (inclusive) as the original text wrote them, for showing why
        an item matched (the folded words when the two cannot be lined up)."""
        if first == last and (originals := self.originals) is not None:
            return originals[first]
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
