"""An item's fingerprint for the story index: the MinHash signature of the word pairs of its
title and opening text, and its headline numbers. Made where items are filed (the helper
processes, in a first poll), so this module holds no numpy where the C part is built: importing
numpy cost each helper 40-60 ms before its first document and 12 MiB. `dedupe.py` keeps the
story index and the numpy reference of the signature (`_minhash_runs`), which tests hold the C
signature to.
"""

from __future__ import annotations

import itertools
import re
import struct
import unicodedata
import zlib
from collections.abc import Sequence

from aggregator import speedups
from aggregator.process import minhash_table
from aggregator.process.text import Field, ItemText, folded_words
from aggregator.types import Entry

NUM_PERM = 128
NUMBERS = 4  # headline numbers kept per fingerprint
FP_WORDS = NUM_PERM + NUMBERS  # a fingerprint is this many little-endian uint32
SHINGLE = 2  # words per shingle
MIN_SHINGLES = 4  # fewer than this and an item is too short to compare by text
SUMMARY_WORDS = 60  # the opening words that stand for a long text (a lede survives trimming)
SHORT_SUMMARY = 20  # a summary of fewer words gives way to the content, where that has more


# datasketch's permutations (`dedupe.permutations` draws them) as the C signature reads them:
# uint32 in this machine's byte order
_A_BYTES = struct.pack(f"={NUM_PERM}I", *minhash_table.A)
_B_BYTES = struct.pack(f"={NUM_PERM}I", *minhash_table.B)


def _opening(field: Field, count: int) -> list[str]:
    """The first `count` folded words of a field: the same words whether or not the topic
    rules folded the whole field already, but folding only as much as needed if not: the text
    up to a space some way in (folding never joins words across a space), more if too few."""
    if "folded" in field.__dict__:
        return field.words[:count]
    text = field.text
    reach = count * 10
    while True:
        cut = text.find(" ", reach) if reach < len(text) else -1
        folded = folded_words(text if cut < 0 else text[:cut])
        words = folded.split(" ") if folded else []
        if len(words) >= count or cut < 0:
            return words[:count]
        reach *= 2


def _words(entry: Entry, text: ItemText) -> list[str]:
    title = text.field("title").words
    body = _opening(text.field("summary"), SUMMARY_WORDS)
    if len(body) < SHORT_SUMMARY:
        content = _opening(text.field("content"), SUMMARY_WORDS)
        if len(content) > len(body):
            body = content
    return title + body


_WORDS_REMEMBERED = 100_000
_encoded: dict[str, tuple[bytes, int]] = {}  # a word -> its UTF-8, and the crc32 of it and a space


def _encodings(words: list[str]) -> list[tuple[bytes, int]]:
    global _encoded
    memo = _encoded
    found = []
    for word in words:
        known = memo.get(word)
        if known is None:
            data = word.encode()
            known = (data, zlib.crc32(data + b" "))
            if len(memo) >= _WORDS_REMEMBERED:
                _encoded = memo = {}
            memo[word] = known
        found.append(known)
    return found


def shingles(entry: Entry, text: ItemText | None = None) -> set[int]:
    """Hashes of the word pairs of the title and opening text, folded (case, accents); crc32,
    which is stable across processes (unlike hash()).

    A pair's crc32 is its second word's, continued from the crc32 of the first and a space
    (which each word's is remembered with: news repeats its words), rather than formatting and
    encoding every pair: the same values for a third of the cost."""
    words = _words(entry, text or ItemText(entry))
    if len(words) < SHINGLE:
        return {zlib.crc32(w.encode()) for w in words}
    crc32 = zlib.crc32
    encoded = _encodings(words)
    return {crc32(data, spaced) for (_, spaced), (data, _) in itertools.pairwise(encoded)}


# A number not inside a word or another number: `(?<![\w.,])\d+...` as a regex opening with a
# digit (the character before it looked at once one is found), which re searches for by that
# set; opening with the lookbehind, it tried every place of the headline (a third slower).
_NUMBER = re.compile(r"\d(?<![\w.,]\d)\d*(?:[.,]\d+)*(?!\w)")


def title_numbers(title: str) -> list[int]:
    """The numbers a headline carries, hashed: 'day 1,727' and 'day 1,728' are two stories."""
    found = set()
    for number in _NUMBER.findall(title):
        digits = "".join(str(unicodedata.digit(c)) if c.isdigit() else c for c in number)
        found.add(zlib.crc32(digits.replace(",", "").encode()) or 1)
    return sorted(found)[:NUMBERS]


def fingerprint(entry: Entry, text: ItemText | None = None) -> bytes | None:
    """The item's MinHash signature and title numbers as bytes, or None when it has too little
    text to compare."""
    return fingerprints([(entry, text or ItemText(entry))])[0]


def fingerprints(items: Sequence[tuple[Entry, ItemText]]) -> list[bytes | None]:
    """`fingerprint` of each item: in C where it was built, else the MinHash of them all in one
    numpy expression (per item, numpy's call overhead was most of the cost of a signature)."""
    if speedups.native is not None:
        return [_native_fingerprint(entry, text) for entry, text in items]
    from aggregator.process.dedupe import _minhash_runs  # numpy: only without the C part

    found = [shingles(entry, text) for entry, text in items]
    signed = [n for n, hashes in enumerate(found) if len(hashes) >= MIN_SHINGLES]
    made: list[bytes | None] = [None] * len(items)
    if not signed:
        return made
    signatures = _minhash_runs([found[n] for n in signed]).astype("<u4")
    for row, n in enumerate(signed):
        made[n] = signatures[row].tobytes() + _numbers_bytes(items[n][0].title)
    return made


_NO_NUMBERS = bytes(4 * NUMBERS)


def _numbers_bytes(title: str) -> bytes:
    """The headline numbers as a fingerprint ends with them (in C: `numbers_bytes`, which tests
    hold to this)."""
    numbers = title_numbers(title)
    if not numbers:  # most headlines
        return _NO_NUMBERS
    return struct.pack(f"<{NUMBERS}I", *numbers, *[0] * (NUMBERS - len(numbers)))


def _folded_opening(field: Field) -> str:
    """A body field's opening words, folded and joined, for the C signature (which takes the
    first SUMMARY_WORDS of them): the whole field where the topic rules folded it already."""
    if "folded" in field.__dict__:
        return field.folded
    return " ".join(_opening(field, SUMMARY_WORDS))


def _native_fingerprint(entry: Entry, text: ItemText) -> bytes | None:
    """`fingerprint` in C: the same words, shingles and signature (tests hold them equal). The
    content is made plain text and folded only where the summary is short, as `_words` does."""
    assert speedups.native is not None
    title = text.field("title")
    body = _folded_opening(text.field("summary"))
    content = ""
    if not body or body.count(" ") + 1 < SHORT_SUMMARY:
        content = _folded_opening(text.field("content"))
    signed = speedups.native.signature(
        title.folded,
        body,
        content,
        SUMMARY_WORDS,
        SHORT_SUMMARY,
        _A_BYTES,
        _B_BYTES,
        MIN_SHINGLES,
    )
    if signed is None:
        return None
    # the headline numbers (`_numbers_bytes`) found, hashed and packed in C too
    made: bytes = signed + speedups.native.numbers_bytes(entry.title, NUMBERS)
    return made
