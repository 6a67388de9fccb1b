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
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

from aggregator import speedups
from aggregator.feed.sanitize import html_to_text
from aggregator.memo import cached_property
from aggregator.process.unicode_ranges import Ranges, table
from aggregator.types import Entry

if TYPE_CHECKING:
    from aggregator._speedups import WordSet


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
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_word_runs: dict[str, int] = {}  # a run of non-ASCII characters -> its kind (below)
_NO_WORD, _WORDS, _MARKED = 0, 1, 2  # no word character; some; some, marks among them
_MARKS = frozenset(chr(c) for first, last in table("marks") for c in range(first, last + 1))


_WORD_EXTRA = _MARKS | {"_"}  # what a word (WORD) holds besides letters and digits
_MARK_RANGES = array("I", chain.from_iterable(table("marks"))).tobytes()  # for the C code


def _is_word(char: str) -> bool:
    """Whether a character belongs in a word (WORD)."""
    return char.isalnum() or char in _WORD_EXTRA


def _run_kind(run: str) -> int:
    if not _MARKS.isdisjoint(run):
        return _MARKED
    return _NO_WORD if WORD.search(run) is None else _WORDS


def _touches_mark(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] has a mark right before or after it: it is then part of a longer
    word (a mark belongs to the word it sits in)."""
    return (start > 0 and text[start - 1] in _MARKS) or (end < len(text) and text[end] in _MARKS)


_memo: dict[str, str] = {}
_SPLIT_NON_ASCII = re.compile(r"([^\x00-\x7f]+)")
_runs: dict[str, str] = {}  # a run of non-ASCII characters, folded


def folded_words(text: str) -> str:
    """The folded words of `text` joined by single spaces.

    Folding is a character at a time (NFKD decomposes each character on its own, the marks it
    may reorder are dropped or kept together, casefolding has no context), so text that is not
    plain ASCII is folded a run of non-ASCII characters at a time, each run remembered (news
    repeats its accents, quotes and dashes), its ASCII lowered between them: the same words as
    folding the whole text, at a tenth of the cost.
    """
    if text.isascii():
        if speedups.native is not None:
            ascii_words: str = speedups.native.fold_ascii(text)
            return ascii_words
        return " ".join(_ASCII_WORD.findall(text.lower().replace("_", " ")))
    global _runs
    if speedups.native is not None:  # the same, in C, with the same memo
        words: str = speedups.native.fold_words(text, _runs, fold, _MEMO_LIMIT, _MARK_RANGES)
        return words
    runs = _runs
    parts = _SPLIT_NON_ASCII.split(text)  # ASCII, a run, ASCII, ..., ASCII
    for at in range(0, len(parts) - 1, 2):
        parts[at] = parts[at].lower()
        run = parts[at + 1]
        folded = runs.get(run)
        if folded is None:
            folded = fold(run)
            if len(runs) >= _MEMO_LIMIT:
                _runs = runs = {}
            runs[run] = folded
        parts[at + 1] = folded
    parts[-1] = parts[-1].lower()
    return " ".join(WORD.findall("".join(parts).replace("_", " ")))


def find_in_fields(
    finder: WordSet, fields: list[Field], needs: tuple[str, ...] | None = None
) -> list[tuple[Field, list[tuple[int, str]]]] | None:
    """The fields holding words of `finder`, each with those of its folded words and their places
    (`WordSet.find`), in C in one call (`WordSet.find_fields`), which keeps each field's folded
    words as its `folded` on the way (fingerprints read them next). None where a field holds
    one of `needs` ignoring case (terms.caseless): its regex terms are to be tried."""
    found = finder.find_fields(fields, _runs, fold, _MEMO_LIMIT, _MARK_RANGES, needs)
    if found is None:
        return None
    return [(fields[index], words) for index, words in found]


def unremembered_words(text: str) -> list[str]:
    """The words `folded_words` gives, folding the whole text and remembering nothing: for text
    from strangers (a search query), which must not grow the memos feeds share."""
    return WORD.findall(fold(text).replace("_", " "))


def _folds_to_one(word: str) -> bool:
    """Whether a word (WORD) folds to exactly one word (not `5½` to `51 2`, nor a lone tatweel
    to none)."""
    folded = folded_token(word)
    return bool(folded) and " " not in folded


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


@dataclass(frozen=True, init=False)
class Field:
    """One part of an item (title, summary, ...) as plain text, with its folded words."""

    name: str
    text: str

    def __init__(self, name: str, text: str) -> None:
        # written straight into the instance's dict: a frozen dataclass's own __init__ sets each
        # through object.__setattr__, twice the cost, and an item makes five to ten fields
        values = self.__dict__
        values["name"] = name
        values["text"] = text

    def written_words(self, scanner: re.Pattern[str], finder: WordSet | None = None) -> list[str]:
        """In a text without underscores, the words `scanner` finds among those spelt in ASCII
        letters and digits (which fold to themselves lowered), and every word with other letters
        or marks, as written, in order. Most English news has none of the latter (its other
        characters are curly quotes, dashes, spaces), so this is one regex search; otherwise the
        runs of non-ASCII characters lead to the words holding them. `finder`: the same words
        as `scanner` finds them, found in C (`WordSet.find_written`)."""
        text = self.text
        if finder is not None:
            find: Callable[[str, int, int], list[str]] = finder.find_written
        else:
            find = scanner.findall
        if text.isascii():
            return find(text, 0, len(text))
        global _word_runs
        runs = _word_runs
        others: list[tuple[int, int, str]] = []
        marked = False  # a mark next to an ASCII word makes it part of a longer word
        last = 0
        for run in _NON_ASCII.finditer(text):
            kind = runs.get(run.group())
            if kind is None:
                kind = _run_kind(run.group())
                if len(runs) >= _MEMO_LIMIT:
                    _word_runs = runs = {}
                runs[run.group()] = kind
            marked = marked or kind == _MARKED
            if kind == _NO_WORD or run.end() <= last:
                continue
            # widened to the words the run is part of (a word before it may be done already)
            first, last = max(run.start(), last), run.end()
            if _is_word(text[first]):  # (the tests inline: a call per letter cost more)
                while first and (text[first - 1].isalnum() or text[first - 1] in _WORD_EXTRA):
                    first -= 1
            if _is_word(text[last - 1]):
                end = len(text)
                while last < end and (text[last].isalnum() or text[last] in _WORD_EXTRA):
                    last += 1
            others += [
                (word.start(), word.end(), word.group())
                for word in WORD.finditer(text, first, last)
                if not word.group().isascii()
            ]
        if not others:
            return find(text, 0, len(text))
        if marked:  # an ASCII word a mark touches is part of a longer word, one of the others
            placed = [
                (match.start(), match.end(), match.group())
                for match in scanner.finditer(text)
                if not _touches_mark(text, *match.span())
            ]
            return [word for _, _, word in sorted(placed + others)]
        found: list[str] = []  # the others in order, the scanner's words between them
        at = 0
        for start, end, word in others:
            found += find(text, at, start)
            found.append(word)
            at = end
        return found + find(text, at, len(text))

    @cached_property
    def _plain_ascii(self) -> bool:
        return self.text.isascii() and "_" not in self.text

    @cached_property
    def _ascii_words(self) -> list[str] | None:
        """The words of a plain ASCII text as written: folding them is lowering them, so one
        findall serves both the folded words and a hit's original text."""
        return _ASCII_WORD.findall(self.text) if self._plain_ascii else None

    @cached_property
    def folded(self) -> str:
        # in Python, the words found as written serve the hits too; C folds in one pass
        written = self._ascii_words if speedups.native is None else None
        if written is not None:
            return " ".join(written).lower()
        return folded_words(self.text)

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
        else:
            found = WORD.findall(text)
            if len(found) != len(self.words) or not all(
                _folds_to_one(word) for word in found if not word.isascii()
            ):
                return None
        return found if len(found) == len(self.words) else None

    def original(self, first: int, last: int) -> str:
        """Words `first` to `last` (inclusive) as the original text wrote them, for showing why
        an item matched (the folded words when the two cannot be lined up). In plain ASCII,
        found in C by counting words: every word's place or spelling, for a hit or two, was a
        twentieth of filing an item, and
        in other text the words found by a regex a twentieth again."""
        native = speedups.native
        if native is not None:  # any other text: each word's folded words counted in C
            found: str | None = (
                native.ascii_words_text(self.text, first, last)
                if self._plain_ascii
                else native.words_text(
                    self.text, first, last, len(self.words), _MARK_RANGES, folded_token
                )
            )
            if found is not None:
                return found
        if first == last and (originals := self.originals) is not None:
            return originals[first]
        spans = self._spans
        if spans is None:
            return " ".join(self.words[first : last + 1])
        return self.text[spans[first][0] : spans[last][1]]


# The publisher's own filing (read off an article page) as fields: each kind is a field of its
# own, so a hit says where it was found ("'Palestine' in the page's breadcrumb").
PUBLISHER_FIELDS = {
    "breadcrumb": "the page's breadcrumb",
    "section": "the page's section",
    "keyword": "the page's keywords",
    "tag": "the page's tags",
    "label": "the page's label",
}
_PUBLISHER_NAMES = frozenset(PUBLISHER_FIELDS.values())


def field_group(name: str) -> str:
    """The part of an item a field belongs to, as editors name it in `fields:`."""
    return "publisher" if name in _PUBLISHER_NAMES else name


# An empty summary or content is the same field for every entry (a field is a value: what it
# remembers of an empty text is empty)
_NO_SUMMARY = (Field("summary", ""),)
_NO_CONTENT = (Field("content", ""),)


class ItemText:
    """The matchable parts of one entry, converted to plain text and folded once, on demand."""

    FIELDS = ("title", "summary", "content", "categories", "publisher")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self._fields: dict[str, tuple[Field, ...]] = {}

    def fields(self, names: Iterable[str] = FIELDS) -> list[Field]:
        made = self._fields
        if names is self.FIELDS and not made:
            return self._every()
        found: list[Field] = []
        for name in names:
            fields = made.get(name)
            if fields is None:
                fields = made[name] = self._make(name)
            found += fields
        return found

    def field(self, name: str) -> Field:
        """The one field of a kind there is one of (title, summary, content)."""
        made = self._fields.get(name)
        if made is None:
            made = self._fields[name] = self._make(name)
        return made[0]

    def _every(self) -> list[Field]:
        """Every field, made at once (what `_make` makes of each, written out): filing's topic
        rules ask for them all first, and a loop over the names was a twentieth of filing an
        item; calling `_make` for each costs 3.5% more (154,899 instructions an item against
        149,557). A test holds the two equal."""
        entry = self.entry
        summary, content = entry.summary, entry.content
        made = self._fields
        made["title"] = title = (Field("title", entry.title),)
        made["summary"] = summaries = (
            (Field("summary", html_to_text(summary)),) if summary else _NO_SUMMARY
        )
        made["content"] = contents = (
            (Field("content", html_to_text(content)),) if content else _NO_CONTENT
        )
        categories = entry.categories
        made["categories"] = filed = (
            tuple([Field("categories", category) for category in categories]) if categories else ()
        )
        made["publisher"] = publisher = self._make("publisher") if entry.publisher else ()
        return [*title, *summaries, *contents, *filed, *publisher]

    def _make(self, name: str) -> tuple[Field, ...]:
        entry = self.entry
        if name == "title":
            return (Field("title", entry.title),)
        if name == "summary":
            summary = entry.summary
            return (Field("summary", html_to_text(summary)),) if summary else _NO_SUMMARY
        if name == "content":  # (most entries have a summary only)
            content = entry.content
            return (Field("content", html_to_text(content)),) if content else _NO_CONTENT
        if name == "categories":
            return tuple([Field("categories", category) for category in entry.categories])
        if name == "publisher":
            if not entry.publisher:
                return ()
            return tuple(
                [
                    Field(PUBLISHER_FIELDS.get(kind, "the page's label"), term)
                    for kind, term in entry.publisher
                ]
            )
        raise ValueError(f"no field {name!r}")

    @cached_property
    def words(self) -> int:
        """Length of the item in words: title and the longer of summary and content."""
        body = max(self.field("summary").text, self.field("content").text, key=len)
        return word_count(self.entry.title) + word_count(body)
