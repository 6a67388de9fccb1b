"""Terms editors write in feeds.yaml, compiled once into matchers over folded text.

A term is a word or phrase (`Gaza`, `West Bank`), matched on word boundaries ignoring case and
accents; `*` inside a word stands for any letters (`Palestin*`, `COP2*`); `/.../` is a Python
regular expression for experts, matched against the original text, ignoring case. The word terms
of a list become one regular expression with a group per term, so a text is scanned once per
list and every hit still says which term it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from aggregator.process.text import PATTERN_WORD, Field, fold


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


def word_pattern(term: str) -> str:
    """A phrase as a regex over folded words: words joined by one space, `*` any letters."""
    return " ".join(re.escape(w).replace(r"\*", r"\S*") for w in _pattern_words(term))


@dataclass(frozen=True)
class Hit:
    """One occurrence of a term in one field."""

    term: str
    field: str
    text: str  # the words as the item wrote them

    def as_json(self) -> dict[str, str]:
        return {"term": self.term, "field": self.field, "text": self.text}


class Terms:
    """A compiled list of terms; `hits` finds every occurrence in the given fields."""

    def __init__(self, terms: Sequence[str], *, whole: bool = False) -> None:
        """`whole`: a word term must match a field entirely (a feed's category, say)."""
        self.terms = tuple(terms)
        self._word_terms = [t for t in self.terms if not is_regex(t)]
        alternatives = "|".join(f"({word_pattern(t)})" for t in self._word_terms)
        pattern = rf"^(?:{alternatives})$" if whole else rf"(?<!\S)(?:{alternatives})(?!\S)"
        self._words = re.compile(pattern) if self._word_terms else None
        self._regexes = [(t, re.compile(t[1:-1], re.IGNORECASE)) for t in self.terms if is_regex(t)]

    def __bool__(self) -> bool:
        return bool(self.terms)

    def hits(self, fields: Iterable[Field]) -> Iterator[Hit]:
        """Every occurrence, field by field, in order."""
        for field in fields:
            if self._words is not None and field.folded:
                for match in self._words.finditer(field.folded):
                    term = self._word_terms[(match.lastindex or 1) - 1]
                    yield Hit(term, field.name, field.original(*match.span()))
            for term, regex in self._regexes:
                for match in regex.finditer(field.text):
                    if match.group():
                        yield Hit(term, field.name, match.group())

    def first(self, fields: Iterable[Field]) -> Hit | None:
        return next(self.hits(fields), None)


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

    def matches(self, url: str | None) -> bool:
        if not url:
            return False
        parts = urlsplit(url)
        if self._host:
            hostname = parts.hostname or ""
            if hostname != self._host and not hostname.endswith("." + self._host):
                return False
        return self._path.search(parts.path.lower() or "/") is not None
