"""The fast YAML path (libyaml events) against the round-trip loader: same data, same positions."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import yamlfile
from aggregator.config.yamlfile import Loc

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "data" / "config"
FILES = [*sorted(CONFIGS.glob("*.yaml")), ROOT / "config" / "feeds.yaml"]

# Shapes an editor writes: comments everywhere, indentless and nested sequences, flow collections
# over several lines, block scalars, quoting of every kind, scalars YAML 1.2 reads as numbers,
# booleans, nulls and dates (and those it reads as text: `yes`, `0777` is octal in 1.1 only).
SNIPPETS = [
    "",
    "# only a comment\n",
    "a: 1\n",
    "a:\n- x\n- y\nb: 2\n",
    "a:\n  - x   # trailing\n  # between\n  - y\n",
    "a: {b: 1,\n    c: [x, y,\n        z]}\n",
    "text: |\n  line one\n  line two\nfolded: >-\n  one\n  two\nnext: 1\n",
    "q1: 'single ''quoted'''\nq2: \"double \\u00e9\\n\"\nplain: text, with commas\n",
    "n: [0, -3, 1_000, 0o17, 0x1F, 1.5, -.inf, .nan, 1e3, +12]\n",
    "b: [true, false, True, yes, no, on, off, y, n]\n",
    "z: [~, null, Null, '', \"\"]\nempty:\nlast: ok\n",
    "d:\n  - 2026-11-30\n  - 2026-11-30T07:00:00Z\n  - '2026-11-30'\n",
    "'quoted key': 1\n\"k2\": 2\n'3': three\n",
    "3: three\ntrue: t\n~: n\n",  # keys that are no text: the loader's
    'unicode: [غزة, Türkiye, 日本, "😀"]\nكلمة: value\n',
    "- top\n- [nested, [deeper, {k: v}]]\n- {}\n- []\n",
    "just a string\n",
    "---\na: 1\n...\n",
    "a:\n  b:\n    c:\n      d: [1, {e: f}]\n",
    "url: https://example.org/a?b=c#d\ncron: '0 7 * * 1-5'\nspan: 15m\n",
    "env: ${HOME} and $$ and ${NOT_SET_ANYWHERE}\n",
    "multi: this is\n  a plain scalar\n  over lines\n",
    "a: !!str 5\n",  # a tag: the loader's
    "a: &x [1]\nb: *x\n",  # an alias: the loader's
    "a: 1\na: 2\n",  # a duplicate: the loader's
    "%YAML 1.1\n---\na: yes\n",  # a directive: the loader's
    "a: 1\n---\nb: 2\n",  # two documents: the loader's
    "? [complex, key]\n: v\n",  # a key that is no scalar: the loader's
    "a: [1, 2\n",  # a syntax error: the loader's
    "a: {<<: {b: 1}, c: 2}\n",  # a merge key: the loader's
    "d: [2026-11-30T07:00:00Z]\n",  # a colon libyaml refuses in a flow sequence: the loader's
]


def _generated(seed: int) -> str:
    """A config as editors write them, with every kind of value, in block and flow style."""
    rng = random.Random(seed)
    lines = ["# generated", "sections:", "  - {id: world, title: World}", "sources:"]
    for n in range(rng.randint(5, 40)):
        if rng.random() < 0.5:
            lines.append(
                f"  - {{id: s{n}, url: 'https://s{n}.example/feed', section: world, "
                f"topics: [gaza], interval: {rng.choice(['15m', '1h', 30])}}}"
            )
        else:
            lines += [
                f"  - id: s{n}  # source {n}",
                f'    url: "https://s{n}.example/feed?x={n}"',
                "    topics:",
                *[f"    - t{k}" for k in range(rng.randint(0, 3))],
                f"    enabled: {rng.choice(['true', 'false', 'yes'])}",
                "    note: >",
                f"      folded {n}",
                "      text",
            ]
    return "\n".join(lines) + "\n"


def _locs(data: Any, loc: Loc = ()) -> Iterator[Loc]:
    yield loc
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _locs(value, (*loc, key))
        yield (*loc, "no such key")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _locs(value, (*loc, index))
        yield (*loc, len(data))


CASES = [(path.name, path.read_text(encoding="utf-8")) for path in FILES]
CASES += [(f"snippet {n}", text) for n, text in enumerate(SNIPPETS)]
CASES += [(f"generated {seed}", _generated(seed)) for seed in range(20)]


@pytest.mark.parametrize(("name", "text"), CASES, ids=[name for name, _ in CASES])
def test_the_fast_path_reads_as_the_round_trip_loader_does(name: str, text: str) -> None:
    if yamlfile._fast(text) is None:
        return  # the loader reads it either way (the test below says which cases these are)
    env = {"HOME": "/home/editor", "AGGREGATOR_SMTP_PASSWORD": "secret"}
    fast, fast_problems = yamlfile.parse(text, env)
    slow, slow_problems = yamlfile.parse(text, env, fast=False)
    assert fast.data == slow.data
    assert [type(v) for v in _values(fast.data)] == [type(v) for v in _values(slow.data)]
    assert fast_problems == slow_problems
    for loc in _locs(slow.data):
        for key in (False, True):
            here, there = fast.position(loc, key=key), slow.position(loc, key=key)
            if here != there and not key and _empty(text, here):
                # An empty value (`note:` and nothing): libyaml places it just after the colon,
                # the loader at the next token, often the next line's key. Ours is the better
                # place to say that a value is missing, and the only difference allowed.
                assert here[0] == fast.position(loc, key=True)[0]
                continue
            assert here == there, (loc, key)


def _empty(text: str, place: tuple[int, int]) -> bool:
    line = text.splitlines()[place[0] - 1]
    return line[: place[1] - 1].rstrip().endswith((":", "-")) and not line[place[1] - 1 :].strip()


def _values(data: Any) -> Iterator[Any]:
    yield data
    if isinstance(data, dict):
        for value in data.values():
            yield from _values(value)
    elif isinstance(data, list):
        for value in data:
            yield from _values(value)


def test_the_fast_path_takes_the_plain_shapes_and_leaves_the_rest() -> None:
    """Without this, the comparison above could be the loader against itself."""
    taken = [name for name, text in CASES if yamlfile._fast(text) is not None]
    left = [name for name, text in CASES if yamlfile._fast(text) is None]
    assert "feeds.yaml" in taken
    assert all(f"generated {seed}" in taken for seed in range(20))
    assert left == ["duplicate_key.yaml", "syntax.yaml", "unsafe_tag.yaml", "snippet 13"] + [
        f"snippet {n}" for n in range(22, 31)
    ]
