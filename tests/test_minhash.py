"""Our MinHash is datasketch's affine32 MinHash, value for value: stored fingerprints stay valid.

datasketch is only a test dependency now (it pulls in scipy, a second of start-up); this holds
our numpy version to it as the reference.
"""

from __future__ import annotations

import itertools
import random
import re
import zlib
from pathlib import Path

import numpy as np
from datasketch import MinHash

from aggregator.process.dedupe import (
    _A,
    _B,
    SEED,
    minhash_values,
    permutations,
    render_table,
)
from aggregator.process.fingerprint import (
    _NUMBER,
    NUM_PERM,
    _words,
    fingerprints,
    shingles,
    title_numbers,
)
from aggregator.process.text import ItemText
from aggregator.types import Entry

ROOT = Path(__file__).resolve().parent.parent


def _reference(hashes: list[int]) -> MinHash:
    sketch = MinHash(num_perm=NUM_PERM, seed=SEED, scheme="affine32", hashfunc=lambda v: v)
    sketch.update_batch(hashes)
    return sketch


def test_the_permutations_are_datasketchs() -> None:
    a, b = permutations()
    ref_a, ref_b = _reference([1]).permutations
    assert np.array_equal(a, np.asarray(ref_a, dtype=np.uint32))
    assert np.array_equal(b, np.asarray(ref_b, dtype=np.uint32))


def test_signatures_equal_datasketchs_for_many_sets() -> None:
    rng = random.Random(5)
    for size in (1, 2, 4, 17, 60, 500):
        hashes = [rng.getrandbits(32) for _ in range(size)]
        ours = minhash_values(hashes)
        assert np.array_equal(ours, np.asarray(_reference(hashes).hashvalues, dtype=np.uint32))


def test_the_written_permutations_are_the_drawn_ones() -> None:
    """Processes use a written copy (numpy.random costs 6 MiB to import); it must be exact."""
    assert (ROOT / "aggregator" / "process" / "minhash_table.py").read_text() == render_table()
    a, b = permutations()
    assert np.array_equal(a, _A) and np.array_equal(b, _B)


def test_a_documents_fingerprints_made_together_are_each_items_own() -> None:
    """A document's items signed in one numpy expression get datasketch's signature of their
    own shingles each, whatever their neighbours; too short an item gets none."""
    rng = random.Random(8)
    words = [
        "gaza",
        "talks",
        "ceasefire",
        "aid",
        "minister",
        "1,727",
        "day",
        "storm",
        "kyiv",
        "école",
        "Türkiye",
    ]
    entries = [
        Entry(
            key=f"k{n}",
            title=" ".join(rng.choices(words, k=rng.randint(0, 9))),
            summary=" ".join(rng.choices(words, k=rng.choice([0, 2, 30, 80]))),
        )
        for n in range(60)
    ]
    made = fingerprints([(entry, ItemText(entry)) for entry in entries])
    assert sum(fp is None for fp in made) >= 5 and sum(fp is not None for fp in made) >= 30
    for entry, fp in zip(entries, made, strict=True):
        found = shingles(entry)
        if fp is None:
            assert len(found) < 4
            continue
        ours = np.frombuffer(fp, dtype="<u4")[:NUM_PERM]
        assert np.array_equal(ours, np.asarray(_reference(list(found)).hashvalues, np.uint32))


def test_shingles_are_the_crc32_of_each_pair_of_folded_words() -> None:
    """A pair's hash is made by continuing the first word's (with its space) over the second:
    the crc32 of the pair written out, as stored fingerprints were made, for words of any
    script, repeated or not."""
    rng = random.Random(3)
    words = ["gaza", "Talks", "école", "Türkiye", "غزة", "1,727", "日本", "naïve", "storm", "x"]
    for _ in range(300):
        entry = Entry(
            key="k",
            title=" ".join(rng.choices(words, k=rng.randint(0, 6))),
            summary=" ".join(rng.choices(words, k=rng.randint(0, 40))),
        )
        folded = _words(entry, ItemText(entry))
        expected = (
            {zlib.crc32(w.encode()) for w in folded}
            if len(folded) < 2
            else {zlib.crc32(f"{a} {b}".encode()) for a, b in itertools.pairwise(folded)}
        )
        assert shingles(entry) == expected


def test_a_headlines_numbers_are_those_standing_alone() -> None:
    """The numbers regex (opening with a digit, so re searches by it) finds what the plain
    statement of the rule finds: digits with no letter, digit, point or comma before them,
    and no letter or digit after, in any script, on random text of the awkward pieces."""
    rule = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)*(?!\w)")
    rng = random.Random(4)
    pieces = ["1", "27", ",", ".", " ", "a", "_", "\u0663", "\u00e9", "-", "x9", "1,727", "5.5"]
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        assert _NUMBER.findall(text) == rule.findall(text), text
    assert title_numbers("Day 1,727: 5 killed") != title_numbers("Day 1,728: 5 killed")
    assert title_numbers("COVID19 and w12") == []
