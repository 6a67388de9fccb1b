"""Terms editors write in feeds.yaml, compiled once into matchers over folded words.

A term is a word or phrase (`Gaza`, `West Bank`), matched on word boundaries ignoring case and
accents; `*` inside a word stands for any letters (`Palestin*`, `COP2*`); `/.../` is a Python
regular expression for experts, matched against the original text, ignoring case.

Word terms are matched word by word, not with one big regular expression: every list of terms
an item is checked against (each topic's keywords and exclusions, say) goes into one index, and
each distinct word of the text is looked up once, its candidates remembered, so an item costs a
dictionary lookup per word whatever the number of topics. News vocabulary repeats, so the
remembered words cover nearly every word seen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any
from urllib.parse import urlsplit

from aggregator import speedups
from aggregator.process.text import PATTERN_WORD, Field, find_in_fields, fold, folded_token

_MEMO_LIMIT = 500_000  # distinct words remembered before starting afresh


def is_regex(term: str) -> bool:
    return len(term) >= 2 and term.startswith("/") and term.endswith("/")


def _pattern_words(term: str) -> list[str]:
    return PATTERN_WORD.findall(fold(term))


def term_problem(term: str) -> str | None:
    """What is wrong with a term, for the config checker; None when it is fine."""
    if not term.strip():
        return "an empty term matches nothing"
    if is_regex(term):
        try:
            pattern = re.compile(term[1:-1], re.IGNORECASE)
        except re.error as exc:
            return f"{term!r} is not a valid regular expression: {exc}"
        if pattern.search(""):
            return f"{term!r} matches an empty text, so it would match every item"
        return None
    if not "".join(_pattern_words(term)).replace("*", ""):
        return f"{term!r} has no letters or digits to match"
    return None


class Hit:
    """One occurrence of a term in one field. Its text (the words as the item wrote them) is
    found when asked for: an item may match a topic's terms dozens of times, and only the first
    few are ever shown or stored."""

    __slots__ = ("_at", "_found", "_json", "_text", "field", "term")

    def __init__(
        self, term: str, field: str, text: str = "", *, found: tuple[Field, int, int] | None = None
    ) -> None:
        self.term = term
        self.field = field
        self._text = text
        self._found = found  # the field and first and last word, when `text` is still to find
        self._json: str | None = None

    @property
    def text(self) -> str:
        if self._found is None:
            return self._text
        source, first, last = self._found
        self._text, self._found = source.original(first, last), None
        return self._text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hit):
            return NotImplemented
        return (self.term, self.field, self.text) == (other.term, other.field, other.text)

    def __hash__(self) -> int:
        return hash((self.term, self.field, self.text))

    def __repr__(self) -> str:
        return f"Hit(term={self.term!r}, field={self.field!r}, text={self.text!r})"

    def as_json(self) -> dict[str, str]:
        return {"term": self.term, "field": self.field, "text": self.text}

    def as_json_text(self) -> str:
        """`as_json` as the JSON text `json.dumps` writes of it, made once: a hit of a word as
        written is one object for every item that writes it (`TermIndex._scan_written`)."""
        if self._json is None:
            term, field, text = _quoted(self.term), _quoted(self.field), _quoted(self.text)
            self._json = f'{{"term": {term}, "field": {field}, "text": {text}}}'
        return self._json


_Word = str | re.Pattern[str]  # a literal folded word, or a word with wildcards


def _word(word: str) -> _Word:
    if "*" not in word:
        return word
    return re.compile(".*".join(re.escape(part) for part in word.split("*")))


def _same(matcher: _Word, word: str) -> bool:
    return matcher == word if isinstance(matcher, str) else bool(matcher.fullmatch(word))


@dataclass(frozen=True)
class _Candidate:
    """A term that may start at a word: which list and term, and the words that must follow."""

    group: int
    order: int
    term: str
    rest: tuple[_Word, ...]


_PLAIN_WORD = re.compile("[a-z0-9]+")


def _written_scanner(first_words: Iterable[str]) -> re.Pattern[str] | None:
    """One regex finding, in text as written, every word spelt in ASCII letters and digits that
    may start a term: such a word folds to itself lowered, so a term's word (`*` standing for
    any letters) matches it ignoring ASCII case. Words no ASCII spelling holds (`غزه`) are left
    out; None when none is left. Case is spelt out (`[gG][aA]...`): under IGNORECASE `k` would
    also match the Kelvin sign, a word `written_words` finds another way.

    The regex opens with the set of the words' first letters (`[gGsS...]`), then checks that a
    word starts there: a regex opening with a set is searched for by that set, a fifth faster
    than one opening with a word boundary.
    """

    def spelt(part: str) -> str:
        return "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in part)

    words = [
        word.split("*")
        for word in sorted(first_words)
        if all(_PLAIN_WORD.fullmatch(part) or not part for part in word.split("*"))
    ]
    if not words:
        return None
    if any(not parts[0] for parts in words):  # a word opening with `*` starts at any letter
        branches = "|".join("[a-zA-Z0-9]*".join(map(spelt, parts)) for parts in words)
        return re.compile(rf"\b(?:{branches})\b")
    firsts = "".join(sorted({c for parts in words for c in spelt(parts[0][0]).strip("[]")}))
    branches = "|".join(
        f"(?<={spelt(parts[0][0])}){'[a-zA-Z0-9]*'.join(map(spelt, [parts[0][1:], *parts[1:]]))}"
        for parts in words
    )
    return re.compile(rf"[{firsts}](?<!\w.)(?:{branches})\b")


def _folded_scanner(first_words: Iterable[str]) -> re.Pattern[str] | None:
    """One regex finding, in folded text (folded words joined by single spaces), every word that
    may start a term; `*` stands for any letters."""
    branches = sorted("[^ ]*".join(map(re.escape, word.split("*"))) for word in first_words)
    if not branches:
        return None
    return re.compile(f"(?<![^ ])(?:{'|'.join(branches)})(?![^ ])")


class TermIndex:
    """Several lists of terms, matched against fields in one pass; `scan` returns the hits of
    each list. Within a list, hits do not overlap: at each word the first term of the list that
    matches there wins and the scan goes on after it, as a regex alternation would."""

    def __init__(self, groups: Sequence[Sequence[str]], *, whole: bool = False) -> None:
        """`whole`: a word term must match a field entirely (a feed's category, say)."""
        self.groups = [tuple(g) for g in groups]
        self._whole = whole
        self._literal: dict[str, list[_Candidate]] = {}
        self._wild: list[tuple[re.Pattern[str], _Candidate]] = []
        self._regexes: list[list[tuple[str, re.Pattern[str], str | None]]] = [
            [] for _ in self.groups
        ]
        firsts: set[str] = set()  # the first word of every word term, folded
        for group, terms in enumerate(self.groups):
            for order, term in enumerate(terms):
                if is_regex(term):
                    regex = re.compile(term[1:-1], re.IGNORECASE)
                    self._regexes[group].append((term, regex, required_text(term[1:-1])))
                    continue
                words = _pattern_words(term)
                if not words:
                    continue
                candidate = _Candidate(group, order, term, tuple(_word(w) for w in words[1:]))
                firsts.add(words[0])
                first = _word(words[0])
                if isinstance(first, str):
                    self._literal.setdefault(first, []).append(candidate)
                else:
                    self._wild.append((first, candidate))
        regexes = [t[1:-1] for g in self.groups for t in g if is_regex(t)]
        # what each regex's matches all hold, lowered: a plain ASCII text without it holds no
        # match (a Python search ignoring case runs a character at a time; `in` is a memchr)
        needs = [need for group in self._regexes for _, _, need in group]
        self._needs: tuple[str, ...] | None = None
        if needs and None not in needs:
            self._needs = tuple(need for need in needs if need is not None)
        # With several regex terms, one search of them all says whether any is in a field.
        # Joined, group numbers shift: terms with backreferences are checked one by one.
        self._any_regex: re.Pattern[str] | None = None
        if len(regexes) > 1 and not any(re.search(r"\\\d|\(\?P=", r) for r in regexes):
            try:
                self._any_regex = re.compile("|".join(f"(?:{r})" for r in regexes), re.I)
            except re.error:  # a term with global flags cannot be joined: check each in turn
                self._any_regex = None
        self._has_regexes = any(self._regexes)
        self._no_hits: tuple[tuple[Hit, ...], ...] = tuple(() for _ in self.groups)
        self._memo: dict[str, tuple[_Candidate, ...]] = {}
        # Every term one word long (the usual topic keywords): a word's hits are its candidates'
        # earliest term of each list, and no hit can overlap another, so `_scan_words` takes a
        # shorter road (a dense item matches a few dozen times).
        self._one_word = all(not c.rest for cs in self._literal.values() for c in cs) and all(
            not c.rest for _, c in self._wild
        )
        # one alternation says whether any wildcard word matches, before trying each
        self._any_wild = (
            re.compile("|".join(f"(?:{p.pattern})" for p, _ in self._wild)) if self._wild else None
        )
        # one-word terms are found in the text as written (see `_scan_written`)
        self._written = _written_scanner(firsts) if self._one_word and not whole else None
        self._folded = _folded_scanner(firsts)
        # for folded text in ASCII (most news in Latin script): a word holding other letters
        # (`*غزة`) can never match there, and a branch opening with `*` is tried at every word
        ascii_firsts = {word for word in firsts if word.isascii()}
        self._folded_ascii = (
            self._folded if ascii_firsts == firsts else _folded_scanner(ascii_firsts)
        )
        self._by_regex = True
        # the same words found in C, where it was built (a hash lookup a word, not a regex)
        self._native = speedups.native.WordSet(sorted(firsts)) if speedups.native else None
        # (field name, a word as written) -> its hits, each (list, hit): shared by every item
        self._written_hits: dict[tuple[str, str], tuple[tuple[int, Hit], ...]] = {}

    def _starting(self, word: str) -> tuple[_Candidate, ...]:
        found = self._memo.get(word)
        if found is None:
            found = tuple(self._literal.get(word, ()))
            if self._any_wild is not None and self._any_wild.fullmatch(word):
                found += tuple(c for pattern, c in self._wild if pattern.fullmatch(word))
            if self._one_word:  # the earliest term of each list: the one that wins there
                best: dict[int, _Candidate] = {}
                for c in found:
                    if c.group not in best or c.order < best[c.group].order:
                        best[c.group] = c
                found = tuple(best.values())
            else:  # by list, then order: a list's first term matching there wins
                found = tuple(sorted(found, key=lambda c: (c.group, c.order)))
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo = {}
            self._memo[word] = found
        return found

    def scan(self, fields: Iterable[Field]) -> Sequence[Sequence[Hit]]:
        """Each list's hits in these fields (read-only: an item with none shares one answer)."""
        # an empty field (most items' content, where a feed gives a summary) holds no hit
        fields = [field for field in fields if field.text]
        native = self._native
        hits: list[list[Hit]]
        if (
            native is not None
            and self._written is None
            and self._by_regex
            and not self._whole
            and (not self._has_regexes or self._needs is not None)
        ):
            # every field in one call, which says too whether any holds a regex term's letters
            found = find_in_fields(native, fields, self._needs if self._has_regexes else None)
            if found is not None:
                if not found:  # (most items: no word of any term)
                    return self._no_hits
                hits = [[] for _ in self.groups]
                for field, starting in found:
                    self._scan_starting(field, starting, hits)
                return hits
        elif not self._has_regexes or self._lacks_regex_letters(fields):
            hits = [[] for _ in self.groups]
            for field in fields:
                self._scan_words(field, hits)
            return hits
        hits = [[] for _ in self.groups]
        needs = self._needs
        for field in fields:
            self._scan_words(field, hits)
            text = field.text
            lowered = caseless(text)
            if needs is not None:
                if not any(need in lowered for need in needs):
                    continue
            elif self._any_regex is not None and self._any_regex.search(text) is None:
                continue
            for group, regexes in enumerate(self._regexes):
                for term, regex, need in regexes:
                    if need is not None and need not in lowered:
                        continue
                    for match in regex.finditer(text):
                        if match.group():
                            hits[group].append(Hit(term, field.name, match.group()))
        return hits

    def _lacks_regex_letters(self, fields: list[Field]) -> bool:
        """Whether no field can hold a regex term's match, by the letters every match holds
        (`required_text`). Most items hold them nowhere: one look over all their text (each
        field is part of it) says so, where a field at a time cost a lowered copy and a search
        of each field."""
        if self._needs is None or len(fields) < 2:
            return False  # a field at a time, as `scan` goes
        if speedups.native is not None:  # the same, without the lowered copy
            return not speedups.native.caseless_holds([f.text for f in fields], self._needs)
        lowered = caseless("\n".join(field.text for field in fields))
        return not any(need in lowered for need in self._needs)

    def _scan_written(self, scanner: re.Pattern[str], field: Field, hits: list[list[Hit]]) -> None:
        """`_scan_words` for one-word terms, in the text as written: one regex finds the ASCII
        words that may start a term (a few in a hundred) in C, and the few words with other
        letters are folded on their own (`Field.written_words`); the text is never folded or
        split. Each word as written makes its hits once, for every item."""
        made = self._written_hits
        name = field.name
        for written in field.written_words(scanner, self._native):
            found = made.get((name, written))
            if found is None:
                found = tuple(
                    (c.group, Hit(c.term, name, written))
                    for word in folded_token(written).split(" ")
                    if word
                    for c in self._starting(word)
                )
                if len(made) >= _MEMO_LIMIT:
                    self._written_hits = made = {}
                made[(name, written)] = found
            for group, hit in found:
                hits[group].append(hit)

    def _starts(self, field: Field) -> list[tuple[int, str]]:
        """The folded words of a field that may start a term, each with its place. One regex over
        the folded text finds them in C (a few words in a hundred), the place counted from the
        spaces before it; looking up every word in Python cost three times more."""
        folded = field.folded
        if self._whole:  # a term must start at the first word (and, `_scan_words` sees, end last)
            return [(0, field.words[0])] if folded else []
        if not self._by_regex:  # every word looked up: the reference the regex is tested against
            return list(enumerate(field.words))
        if self._native is not None:
            words: list[tuple[int, str]] = self._native.find(folded)
            return words
        scanner = self._folded_ascii if folded.isascii() else self._folded
        if scanner is None or not folded:
            return []
        found = []
        at = last = 0
        for match in scanner.finditer(folded):
            start = match.start()
            at += folded.count(" ", last, start)
            last = start
            found.append((at, match.group()))
        return found

    def _scan_words(self, field: Field, hits: list[list[Hit]]) -> None:
        if self._written is not None and self._by_regex and "_" not in field.text:
            self._scan_written(self._written, field, hits)
            return
        starting = self._starts(field)
        if starting:
            self._scan_starting(field, starting, hits)

    def _scan_starting(
        self, field: Field, starting: list[tuple[int, str]], hits: list[list[Hit]]
    ) -> None:
        """The hits of the terms that may start at these words of a field (`_starts`)."""
        memo = self._memo
        if self._one_word:
            if self._whole and len(field.words) != 1:
                return
            name = field.name
            originals: list[str] | None = None
            looked = False  # for the words as written, on the first hit
            # A word repeated as written is one hit object repeated: a dense item matches a
            # few words dozens of times, and making each hit cost more than finding it.
            made: dict[tuple[int, str, str], Hit] = {}
            for at, word in starting:
                candidates = memo.get(word)
                if candidates is None:
                    candidates = self._starting(word)
                if not candidates:
                    continue
                if not looked:
                    originals, looked = field.originals, True
                for c in candidates:
                    if originals is None:
                        hits[c.group].append(Hit(c.term, name, found=(field, at, at)))
                        continue
                    key = (c.group, c.term, originals[at])
                    hit = made.get(key)
                    if hit is None:
                        hit = made[key] = Hit(c.term, name, originals[at])
                    hits[c.group].append(hit)
            return
        words: list[str] | None = None  # split when a term of several words is tried
        count = 0
        whole = self._whole
        name = field.name
        # group -> the word where its next hit may start (hits of one list do not overlap)
        free: dict[int, int] = {}
        for at, word in starting:
            candidates = memo.get(word)
            if candidates is None:
                candidates = self._starting(word)
            # by list, then order: a list's first term matching here wins, and its hit makes
            # the list's next hit start after it (so its other terms here are passed over)
            for c in candidates:
                group = c.group
                if free.get(group, 0) > at:
                    continue
                rest = c.rest
                end = at + len(rest)
                if rest or whole:
                    if words is None:
                        words = field.words
                        count = len(words)
                    if end >= count or (whole and end != count - 1):
                        continue
                    if rest and not all(_same(m, words[at + 1 + k]) for k, m in enumerate(rest)):
                        continue
                hits[group].append(Hit(c.term, name, found=(field, at, end)))
                free[group] = end + 1


class Terms:
    """One list of terms (a filter's, or a section's categories)."""

    def __init__(self, terms: Sequence[str], *, whole: bool = False) -> None:
        self.terms = tuple(terms)
        self._index = TermIndex([self.terms], whole=whole)

    def __bool__(self) -> bool:
        return bool(self.terms)

    def hits(self, fields: Iterable[Field]) -> Iterator[Hit]:
        """Every occurrence, field by field, in order."""
        for field in fields:
            yield from self._index.scan([field])[0]

    def first(self, fields: Iterable[Field]) -> Hit | None:
        return next(self.hits(fields), None)


# The only characters beyond ASCII that a regex ignoring case matches with an ASCII letter (found
# by trying every code point against every letter): dotted and dotless i, the Kelvin sign, the
# long s. Written as those letters, then lowered, any text holds a regex term's `required_text`
# wherever the regex matches in it.
_CASELESS = str.maketrans({"\u0130": "i", "\u0131": "i", "\u212a": "k", "\u017f": "s"})
_CASELESS_LETTERS = "\u0130\u0131\u212a\u017f"


def caseless(text: str) -> str:
    """Text lowered, the four letters above written as ASCII: where a regex term ignoring case
    matches, this holds its required letters. Text not plain ASCII was searched with the
    regexes at every place, found or not."""
    if not text.isascii() and any(letter in text for letter in _CASELESS_LETTERS):
        text = text.translate(_CASELESS)  # (rare: a translation costs a dict lookup a letter)
    return text.lower()


def required_text(pattern: str) -> str | None:
    """Letters every match of a regex term holds in a row, lowered, where they are plain ASCII
    (three at least): `Sudan` of `(?<!South )\\bSudan(ese)?\\b`. A letter matches an ASCII
    letter ignoring case only where the two are equal lowered, or it is one of four others
    (`caseless` writes those as ASCII): a text whose `caseless` lacks them holds no match. Read
    from the parsed pattern (`re._parser`, CPython's own); None where nothing is sure."""
    try:
        from re import _constants as sre  # type: ignore[attr-defined]
        from re import _parser  # type: ignore[attr-defined]

        parsed = _parser.parse(pattern, re.IGNORECASE)
    except Exception:  # another Python's regex internals: no shortcut
        return None
    found: list[str] = []

    def walk(items: Iterable[tuple[Any, Any]]) -> None:
        """Runs of literals in a sequence every match goes through; groups and repeats of at
        least one are gone through too (their runs apart), branches and options are not."""
        run = ""
        for op, value in items:
            if op is sre.LITERAL and value < 128:
                run += chr(value).lower()
                continue
            if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
                continue  # zero width: the letters on either side are still in a row
            found.append(run)
            run = ""
            if op is sre.SUBPATTERN:
                walk(value[-1])
            elif op is sre.ATOMIC_GROUP:
                walk(value)
            elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT) and value[0] >= 1:
                walk(value[2])
        found.append(run)

    try:
        walk(parsed)
    except Exception:
        return None
    best = max(found, key=len, default="")
    return best if len(best) >= 3 else None


def path_problem(pattern: str) -> str | None:
    """What is wrong with a section's URL path pattern; None when it is fine."""
    if not pattern or any(c.isspace() for c in pattern):
        return f"{pattern!r} is not a URL path pattern (no spaces; such as /opinion/)"
    if "/" not in pattern or "://" in pattern:
        return (
            f"{pattern!r} is not a URL path pattern: write a path such as /opinion/, "
            "or a host and path such as example.com/opinion/ (no http://)"
        )
    if not pattern.replace("*", "").strip("/"):
        return f"{pattern!r} would match every link"
    return None


class PathRule:
    """`/opinion/` matches links whose path contains it; `host/path` also needs that host (or a
    subdomain of it); `*` matches any characters but `/`. Case is ignored."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        host, _, path = pattern.partition("/") if not pattern.startswith("/") else ("", "", pattern)
        self._host = host.lower()
        if host:
            path = "/" + path
        self._path = re.compile(re.escape(path.lower()).replace(r"\*", "[^/]*"))

    @property
    def path_pattern(self) -> str:
        return self._path.pattern

    def matches(self, url: str | None) -> bool:
        return self.matches_parts(*split_link(url)) if url else False

    def matches_parts(self, hostname: str, path: str) -> bool:
        """For a link already split by `split_link` (a section check splits it once)."""
        if self._host and hostname != self._host and not hostname.endswith("." + self._host):
            return False
        return self._path.search(path) is not None


_LINK = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/?#]*@)?(\[[^\]]*\]|[^:/?#]*)[^/?#]*([^?#]*)")


def split_link(url: str) -> tuple[str, str]:
    """A link's host name and lowercased path, as path rules compare them (a regex: urlsplit
    costs more than the rules)."""
    match = _LINK.match(url)
    if match is None:
        parts = urlsplit(url)
        return parts.hostname or "", parts.path.lower() or "/"
    return match.group(1).lower().strip("[]"), match.group(2).lower() or "/"
