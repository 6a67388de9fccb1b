"""Types of the C module `_speedups.c` (see speedups.py)."""

from collections.abc import Callable, Sequence
from typing import Any

def clean_simple(
    fragment: str,
    allowed: dict[str, frozenset[str]],
    generic: frozenset[str],
    links: frozenset[str],
    join: Callable[[str], str],
    rel: str,
    /,
) -> str | None: ...
def json_string(text: str, /) -> str: ...
def not_xml(text: str, /) -> bool: ...
def numbers(title: str, /) -> list[str]: ...
def numbers_bytes(title: str, count: int, /) -> bytes: ...
def caseless_holds(texts: Sequence[str], needs: Sequence[str], /) -> bool: ...
def ascii_words_text(text: str, first: int, last: int, /) -> str | None: ...
def fold_words(
    text: str, runs: dict[str, str], fold: Callable[[str], str], limit: int, marks: bytes, /
) -> str: ...
def fold_ascii(text: str, /) -> str | None: ...
def words_text(
    text: str,
    first: int,
    last: int,
    count: int,
    marks: bytes,
    token_fold: Callable[[str], str],
    /,
) -> str | None: ...
def strip_tags(fragment: str, special: WordSet, /) -> str | None: ...
def collapse_spaces(text: str, /) -> str: ...
def signature(
    title: str,
    summary: str,
    content: str,
    limit: int,
    short: int,
    a: bytes,
    b: bytes,
    min_shingles: int,
    /,
) -> bytes | None: ...
def bloom_add(words: Any, size: int, keys: Any, /) -> None: ...
def lookup(
    query: Any, words: Any, size: int, bands: int, runs: list[tuple[Any, ...]], /
) -> tuple[bytes, bytes]: ...
def merge(
    keys: Any, offsets: Any, count: int, new_keys: Any, new_slots: Any, shift: int, /
) -> None: ...
def verify(
    owners: Any,
    slots: Any,
    needed: int,
    after: int,
    ids: Any,
    alive: Any,
    times: Any,
    moments: Any,
    span: float,
    sigs: Any,
    blocks: list[Any],
    block_rows: int,
    bits: int,
    numbers: Any,
    threshold: float,
    most: int,
    /,
) -> list[tuple[int, int, float]]: ...
def band_keys(sigs: Any, width: int, bands: int, rows: int, /) -> bytes: ...
def compare(a: bytes, b: bytes, perms: int, numbers: int, /) -> tuple[int, bool]: ...
def within(
    keys: Any,
    bands: int,
    needed: int,
    head: int,
    tail: int,
    sigs: Any,
    times: Any,
    span: float,
    threshold: float,
    /,
) -> tuple[list[list[tuple[int, float]]], int]: ...
def sort_pairs(keys: Any, slots: Any, /) -> tuple[bytes, bytes]: ...

class WordSet:
    def __init__(self, words: Sequence[str]) -> None: ...
    def find(self, folded: str, /) -> list[tuple[int, str]]: ...
    def find_fields(
        self,
        fields: Sequence[Any],
        runs: dict[str, str],
        fold: Callable[[str], str],
        limit: int,
        marks: bytes,
        needs: Sequence[str] | None = None,
        /,
    ) -> list[tuple[int, list[tuple[int, str]]]] | None: ...
    def find_written(self, text: str, start: int = 0, end: int = ..., /) -> list[str]: ...
    def holds(self, word: str, /) -> bool: ...
