"""A reader's search words as a query both databases run the same way.

The syntax is what search boxes have taught readers: words (all of them must be there),
`"a phrase"`, `prefix*`, and `-word` or `-"a phrase"` to leave out. Words are folded as the
topic matcher folds them (case, accents, Arabic letter variants), and the stored text was
indexed folded the same way, so SQLite's FTS5 and PostgreSQL's full text, each given the query
in its own syntax, find the same items: no stemming, no stop words, on either.

A query is bounded before it reaches a database: its length, its terms, its words, and the
length of a prefix (a one-letter prefix stands for much of the vocabulary). The database's
own time is bounded too, by storage (a deadline on the statement).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aggregator.exceptions import SearchRefusedError
from aggregator.process.text import unremembered_words

MAX_CHARS = 200  # characters of a query
MAX_TERMS = 8  # words, phrases and prefixes, left out or not
MAX_WORDS = 16  # words in all, phrases counted word by word
MIN_PREFIX = 3  # letters before a `*`
MAX_PREFIXES = 2

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # echoed back on pages: never kept
# a term: an optional minus, then a quoted phrase (closed or not) or a run of other characters
_TERM = re.compile(r'(-?)(?:"([^"]*)"?|([^\s"]+))(\*?)')


@dataclass(frozen=True)
class Term:
    """Words that must stand together, in order; the last one a prefix when `prefix`."""

    words: tuple[str, ...]
    prefix: bool = False
    excluded: bool = False


@dataclass(frozen=True)
class Query:
    """A parsed query: its terms, and the text as the reader wrote it (trimmed)."""

    text: str
    terms: tuple[Term, ...]

    @property
    def wanted(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if not t.excluded)

    @property
    def unwanted(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.excluded)

    def fts5(self) -> str:
        """The query in SQLite FTS5's syntax (every word quoted: none is an operator)."""
        wanted = " AND ".join(_fts5_term(t) for t in self.wanted)
        unwanted = " OR ".join(_fts5_term(t) for t in self.unwanted)
        return f"({wanted}) NOT ({unwanted})" if unwanted else wanted

    def tsquery(self) -> str:
        """The query as a PostgreSQL tsquery literal (its lexemes quoted: no parser runs)."""
        parts = [_ts_term(t) for t in self.wanted]
        parts += [f"!({_ts_term(t)})" for t in self.unwanted]
        return " & ".join(parts)


def _fts5_term(term: Term) -> str:
    phrase = '"' + " ".join(term.words).replace('"', '""') + '"'
    return phrase + "*" if term.prefix else phrase


def _ts_term(term: Term) -> str:
    lexemes = ["'" + w.replace("\\", "\\\\").replace("'", "''") + "'" for w in term.words]
    if term.prefix:
        lexemes[-1] += ":*"
    joined = " <-> ".join(lexemes)
    return f"({joined})" if len(lexemes) > 1 else joined


def parse(text: str) -> Query:
    """The query in `text`, or SearchRefusedError saying what to change."""
    text = " ".join(_CONTROLS.sub(" ", text).split())
    if not text:
        raise SearchRefusedError("type a word or two to search for")
    if len(text) > MAX_CHARS:
        raise SearchRefusedError(
            f"the search is {len(text)} characters long; at most {MAX_CHARS} are searched for"
        )
    terms: list[Term] = []
    for match in _TERM.finditer(text):
        minus, phrase, bare, star = match.groups()
        written = phrase if phrase is not None else bare
        if written.rstrip().endswith("*"):  # `word**`, `"a phrase*"`
            written, star = written.rstrip().rstrip("*"), "*"
        words = tuple(unremembered_words(written))
        if not words:
            continue  # punctuation alone, a lone minus or star
        if star and len(words[-1]) < MIN_PREFIX:
            raise SearchRefusedError(
                f"{words[-1]}* stands for too many words; write at least {MIN_PREFIX} letters "
                "before the *"
            )
        terms.append(Term(words, bool(star), bool(minus)))
    if not terms:
        raise SearchRefusedError(
            "type a word or two to search for (punctuation alone finds nothing)"
        )
    if all(t.excluded for t in terms):
        raise SearchRefusedError(
            "say what to look for as well as what to leave out: a search of only -words would "
            "list everything"
        )
    if len(terms) > MAX_TERMS:
        raise SearchRefusedError(
            f"the search has {len(terms)} terms; at most {MAX_TERMS} are allowed"
        )
    count = sum(len(t.words) for t in terms)
    if count > MAX_WORDS:
        raise SearchRefusedError(f"the search has {count} words; at most {MAX_WORDS} are allowed")
    if sum(t.prefix for t in terms) > MAX_PREFIXES:
        raise SearchRefusedError(f"at most {MAX_PREFIXES} words may end in *")
    return Query(text, tuple(terms))
