"""Filing's per-item text work and the story index's per-batch work in C, where it was built: the
one place that says whether it was.

Filing an item (its HTML made plain text, its fields folded, the words that may start a term
found, its MinHash signature) cost about 110 us an item in Python, spread over a dozen steps,
each already one regex or one numpy call: what was left was Python's own cost per word and per
call. `_speedups.c` does those steps in one pass over the text each, with the same results
(tests/test_speedups.py holds them equal to the Python code, which stays as the fallback).

No library on the registries does these steps with these results (a fingerprint must stay equal to
those already stored); pyahocorasick, measured earlier, found terms no faster than our regex.

`_index.c`, in the same module, does the story index's per-batch work (`SimilarityIndex` in
process/dedupe.py): its Bloom filter, the lookups of a batch's band keys in the sorted runs, the
scoring of candidates, the comparison within a batch and the merges into a run. numpy made some
60 calls a batch of 25 items there, each paying numpy's cost per call, and its binary searches
missed the cache at most steps of a run of millions of keys. The numpy code stays as the fallback
and the reference (tests/test_speedups.py holds the two equal, step by step).

Two small scans serve a helper's reading of a document: whether a text holds a character XML
cannot carry (`not_xml`, for normalise.py), and a string written as JSON (`json_string`, for an
entry's digest); a regex search and json's escaper did each a character at a time in a loop of
the interpreter's, and were about a tenth of the helper's work between them.

`_sanitize.c` cleans the common case of feed HTML (known tags closed in order, plain entities,
nothing an HTML tree builder would move) as nh3 cleans it, in one pass: nh3 parses every fragment
into a tree and writes it out again, a fifth of a helper's work; it still cleans everything else
(tests/test_sanitize_fast.py holds the two equal on the corpus and on generated markup).

The module is built by `pip install` where a C compiler is found (setup.py marks it optional), so a
machine without one still installs and runs, on the Python code. `AGGREGATOR_PURE_PYTHON=1` runs
the Python code where it was built too (to compare the two, or to rule the C out).
"""

from __future__ import annotations

import os
from types import ModuleType

native: ModuleType | None = None
if not os.environ.get("AGGREGATOR_PURE_PYTHON"):
    try:
        from aggregator import _speedups

        native = _speedups
    except ImportError:  # not built: no compiler where it was installed
        native = None


def describe() -> str:
    """Which code files items here, in words (the README's one-line check prints it)."""
    if native is not None:
        return "filing and the story index in C (aggregator._speedups)"
    if os.environ.get("AGGREGATOR_PURE_PYTHON"):
        return "filing and the story index in Python (AGGREGATOR_PURE_PYTHON is set)"
    return "filing and the story index in Python (the C part was not built: no compiler)"
