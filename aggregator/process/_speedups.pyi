"""Types of the C module `_speedups.c` (see speedups.py)."""

from collections.abc import Sequence

def fold_ascii(text: str, /) -> str | None: ...
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

class WordSet:
    def __init__(self, words: Sequence[str]) -> None: ...
    def find(self, folded: str, /) -> list[tuple[int, str]]: ...
    def find_written(self, text: str, start: int = 0, end: int = ..., /) -> list[str]: ...
    def holds(self, word: str, /) -> bool: ...
