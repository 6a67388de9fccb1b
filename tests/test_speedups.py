"""The C part of filing (aggregator/_speedups.c) gives what the Python code gives: folded
text, the words that may start a term, and fingerprints, on random tricky text, the labelled
set and every document of the conformance corpus. Where the C part was not built (no compiler at
install) these tests skip, except in CI, where it must have been."""

from __future__ import annotations

import json
import os
import random
import re
import string
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import ModuleType

import numpy as np
import pytest

from aggregator import speedups, types
from aggregator.config import load_config
from aggregator.exceptions import ParseError
from aggregator.feed import normalise, sanitize
from aggregator.feed.parse import parse_document
from aggregator.process import dedupe
from aggregator.process import fingerprint as prints
from aggregator.process.pipeline import Processor
from aggregator.process.terms import TermIndex, _folded_scanner, _word, _written_scanner
from aggregator.process.text import Field, folded_words
from aggregator.types import Entry, Filing
from tests.conftest import ROOT
from tests.test_process import TRICKY, tricky_text
from tests.test_sanitize_text import _fragment

EVAL = ROOT / "tests" / "data" / "eval"
CORPUS = ROOT.parent / "shared" / "corpus"


@pytest.fixture
def native() -> ModuleType:
    if speedups.native is None:
        if os.environ.get("CI"):
            pytest.fail(f"the C part of filing must be built in CI: {speedups.describe()}")
        pytest.skip(speedups.describe())
    return speedups.native


@contextmanager
def pure_python() -> Iterator[None]:
    """The Python code, as a machine without the C part runs it."""
    saved = speedups.native
    speedups.native = None
    try:
        yield
    finally:
        speedups.native = saved


def test_folding_ascii_text_in_c_is_folding_it_in_python(native: ModuleType) -> None:
    rng = random.Random(1)
    alphabet = string.printable + "__"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        with pure_python():
            wanted = folded_words(text)
        assert native.fold_ascii(text) == wanted, repr(text)
    assert native.fold_ascii("École") is None  # not ASCII: Python folds it
    for _ in range(2000):
        field = Field("title", tricky_text(rng, glue=True))
        with pure_python():
            expected = (Field(field.name, field.text).folded, Field(field.name, field.text).words)
        assert (field.folded, field.words) == expected, repr(field.text)


def test_text_xml_cannot_carry_is_found_in_c_as_the_regex_finds_it(native: ModuleType) -> None:
    """Every boundary of the characters XML cannot carry (controls but tab, LF and CR; DEL and
    C1; lone surrogates; U+FFFE, U+FFFF), in strings of each width CPython keeps."""
    edges = [0, 8, 9, 10, 11, 12, 13, 14, 0x1F, 0x20, 0x7E, 0x7F, 0x9F, 0xA0, 0xFF, 0x100,
             0xD7FF, 0xD800, 0xDFFF, 0xE000, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x10FFFF]  # fmt: skip
    rng = random.Random(4)
    found = 0
    for _ in range(20_000):
        width = rng.choice([0x7F, 0xFF, 0xFFFF, 0x10FFFF])
        pool = [c for c in edges if c <= width] + [rng.randint(0x20, width) for _ in range(4)]
        text = "".join(chr(rng.choice(pool)) for _ in range(rng.randint(0, 12)))
        wanted = normalise._NOT_XML.search(text) is not None
        assert native.not_xml(text) is wanted, repr(text)
        found += wanted
        with pure_python():
            expected = normalise.xml_text(text)
        assert normalise.xml_text(text) == expected
    assert 2_000 < found < 18_000  # both answers, many times


def test_an_entrys_digest_json_in_c_is_what_json_dumps_writes(native: ModuleType) -> None:
    """Strings of every kind (controls, quotes, backslashes, each width CPython keeps, lone
    surrogates) in the shapes a digest holds: the C escaper writes what json.dumps writes, so
    no stored digest changes."""
    rng = random.Random(8)
    pool = [0, 7, 8, 9, 10, 12, 13, 0x1B, 0x1F, 0x20, ord('"'), ord("\\"), ord("/"), 0x7F, 0xE9,
            0x2028, 0xD800, 0xFFFF, 0x1F600]  # fmt: skip

    def text() -> str:
        return "".join(
            chr(rng.choice(pool)) if rng.random() < 0.3 else rng.choice("ab <p>")
            for _ in range(rng.randint(0, 16))
        )

    written = types._json_writer()
    with pure_python():
        plain = types._json_writer()
    for _ in range(5000):
        parts = [text(), None, [text(), text()], [(text(), None, rng.randint(0, 9))], text()]
        assert written(parts) == json.dumps(parts, ensure_ascii=False) == plain(parts)
        word = text()
        assert native.json_string(word) == json.dumps(word, ensure_ascii=False), repr(word)


def test_words_of_any_text_in_c_are_the_words_the_regex_finds(native: ModuleType) -> None:
    """What ends the folding of text that is not plain ASCII: letters and digits of every script,
    marks (inside a word and on their own), underscores, symbols, characters beyond the BMP."""
    from aggregator.process.text import _MARK_RANGES, WORD

    rng = random.Random(4)
    pool = (
        [chr(c) for c in range(0x20, 0x250)]
        + list("\u0301\u093e\u0640_  \n\t’—")
        + [chr(rng.randrange(0x250, 0x30000)) for _ in range(3000)]
    )
    for _ in range(20_000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))
        lowered = "".join(c.lower() if c.isascii() else c for c in text)
        expected = " ".join(WORD.findall(lowered.replace("_", " ")))
        unfolded = native.fold_words(text, {}, lambda run: run, 10, _MARK_RANGES)
        assert unfolded == expected, repr(text)


def test_folding_any_text_in_c_is_folding_it_in_python(native: ModuleType) -> None:
    """`fold_words` (runs of other characters folded through the memo) against the Python
    `folded_words`, with a memo so small that it is emptied again and again."""
    from aggregator.process import text as words
    from aggregator.process.text import _MARK_RANGES, fold

    rng = random.Random(6)
    pieces = [*TRICKY, "Réfugiés", "غَزَّة", "_", "ﬁne", "5½", "İstanbul", "Ab", " ", "—", "™"]
    memo: dict[str, str] = {}
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        got = native.fold_words(text, memo, fold, 4, _MARK_RANGES)
        with pure_python():
            assert got == words.folded_words(text), repr(text)
        assert len(memo) <= 4
    with pytest.raises(TypeError, match="str"):
        native.fold_words("é", {}, lambda run: 5, 4, _MARK_RANGES)


FIRST_WORDS = [
    ["gaza", "gaza*", "aid", "syria", "damascus", "ecole", "storm*", "fire"],
    ["turkiye", "غزه", "*stan*", "kyiv", "istanbul", "5", "fire", "e*e"],
    ["*غزه", "a*b*c", "x**y", "*", "cop2*", "*ine"],
    # many wild words, sharing first and last letters (the C set sorts them by those)
    ["pal*", "gaza*", "*غزه", "*فلسطين*", "*سوري*", "*حلب", "cop3*", "cop2*", "*stan", "*e*",
     "c*e", "*a*b*", "e*", "*e", "**"],
]  # fmt: skip


@pytest.mark.parametrize("words", FIRST_WORDS)
def test_the_words_that_may_start_a_term_are_those_the_regex_finds(
    native: ModuleType, words: list[str]
) -> None:
    """`WordSet.find` against the regex over folded text it stands in for, and `holds` against
    each word's own pattern, on random folded text of tricky pieces and near misses."""
    rng = random.Random(len(words))
    found = native.WordSet(words)
    scanner = _folded_scanner(words)
    assert scanner is not None
    pieces = [folded_words(t) for t in TRICKY] + [
        "gazan", "gaz", "agaza", "abc", "axbyc", "ac", "xy", "x", "cop26", "cop3", "palestine",
        "بغزه", "غزهب", "stan", "pakistani", "eee", "ee",
    ]  # fmt: skip
    pieces = [p for p in pieces if p]
    for _ in range(3000):
        folded = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        expected = []
        at = last = 0
        for match in scanner.finditer(folded) if folded else ():  # `_starts` skips empty text
            at += folded.count(" ", last, match.start())
            last = match.start()
            expected.append((at, match.group()))
        assert found.find(folded) == expected, folded
        for word in folded.split(" "):
            if word:
                wanted = any(
                    m == word if isinstance(m, str) else m.fullmatch(word)
                    for m in map(_word, words)
                )
                assert found.holds(word) is wanted, word


@pytest.mark.parametrize("words", FIRST_WORDS)
def test_written_words_that_may_start_a_term_are_those_the_regex_finds(
    native: ModuleType, words: list[str]
) -> None:
    """`WordSet.find_written` against the regex over text as written it stands in for, over
    random text of tricky pieces (letters of other scripts and underscores touching ASCII words,
    long words) and random stretches of it."""
    rng = random.Random(len(words) + 1)
    found = native.WordSet(words)
    scanner = _written_scanner(words)
    assert scanner is not None
    pieces = [*TRICKY, "Gazan", "GAZA", "aGaza", "CoP26", "Pakistan", "x" * 80 + "stan", "_5"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) + rng.choice(["", " ", "-"]) for _ in range(12))
        start, end = sorted(rng.randint(0, len(text)) for _ in range(2))
        # (a word of `*` alone lets the regex match nothing at a word's edge: no word, no hit)
        assert found.find_written(text) == [w for w in scanner.findall(text) if w], text
        expected = [w for w in scanner.findall(text, start, end) if w]
        assert found.find_written(text, start, end) == expected, (text, start, end)


def test_a_hits_words_as_written_are_found_in_c_as_in_python(native: ModuleType) -> None:
    """`Field.original` counts words in C: every span of words (one word, a phrase across
    punctuation) must be what the words' places give in Python, in plain ASCII and in text
    whose words fold to several or none (`5½`, a lone tatweel), hold marks or underscores, or
    are in other scripts."""
    rng = random.Random(21)
    pieces = ["Gaza", "WEST", "bank", "5", "x9", "--", "'", ".", " ", "\n", ",", "-", "_", "é",
              "5½", "ـ", "ﬁne", "İstanbul", "غَزَّة", "\u0301", "हिंदी", "’", "a_b", "™"]  # fmt: skip
    checked = 0
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        words = len(Field("title", text).words)
        for first in range(words):
            for last in range(first, min(words, first + 3)):
                got = Field("title", text).original(first, last)
                with pure_python():
                    assert got == Field("title", text).original(first, last), (text, first, last)
                checked += 1
    assert checked > 10_000
    assert (
        native.ascii_words_text("a b", 0, 2) is None and native.ascii_words_text("é", 0, 0) is None
    )
    from aggregator.process.text import _MARK_RANGES, folded_token

    assert native.words_text("é a", 1, 1, 2, _MARK_RANGES, folded_token) == "a"
    assert native.words_text("é a", 1, 2, 2, _MARK_RANGES, folded_token) is None  # no word 2
    assert native.words_text("é a", 0, 0, 3, _MARK_RANGES, folded_token) is None  # 2 words, not 3
    assert native.words_text("5½ x", 1, 2, 3, _MARK_RANGES, folded_token) == "5½ x"  # 51 2 x
    with pytest.raises(TypeError, match="str"):
        native.words_text("é", 0, 0, 1, _MARK_RANGES, lambda word: 1)


def test_html_to_text_in_c_is_html_to_text_in_python(native: ModuleType) -> None:
    """Tags stripped (or left to the parser) and spaces folded alike, on generated markup
    (tags of every kind, broken ones, entities, controls, other scripts) and on what the
    sanitiser writes of it."""
    rng = random.Random(15)
    odd = ["<a\u3000href=x>", "<p\u2028>", '<img src="a"b>', '<x y="z"/>', "< p>", "<p\0>"]
    odd += ["<SCRIPT>x</Script>", "<NoScript>", "<abcdefghijklmnopqrstuvwxyz>", "<plaintext1>"]
    # one-byte text (scanned from `<` to `<`): a `<` last, doubled, before no letter
    odd += ["a <", "x < y <", "<<p>>", "</>", "<!x>", "<?x?>", "\xe9<b>\xe8</b> <", "<"]
    stripped = 0
    for _ in range(6000):
        fragment = _fragment(rng) + rng.choice(["", *odd])
        for text in (fragment, sanitize.clean_html(fragment, "https://base.example/")):
            got = (sanitize._strip(text), sanitize._text(text), sanitize.html_to_text(text))
            with pure_python():
                expected = (
                    sanitize._strip(text),
                    sanitize._text(text),
                    sanitize.html_to_text(text),
                )
            assert got == expected, text
            stripped += got[0] is not None
    assert stripped > 3000


def test_collapsing_spaces_in_c_is_splitting_and_joining(native: ModuleType) -> None:
    """Text already collapsed is its own answer (no copy made); any other one-byte text, with
    every kind of space below 256 at either end, doubled or alone, is collapsed as Python does."""
    rng = random.Random(21)
    alphabet = [" ", " ", "a", "b", "\xe9", "\x01", "\t", "\n", "\x0b", "\x1c", "\x1f"]
    alphabet += ["\x85", "\xa0", "\x7f", "\xff"]
    samples = ["", " ", "a", "a b", " a", "a ", "a  b", "a\xa0b", "a\x85", "a\x01 b"]
    samples += ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(20_000)]
    for text in samples:
        assert native.collapse_spaces(text) == " ".join(text.split()), repr(text)
    plain = "already single spaced, \xe9 and all"
    assert native.collapse_spaces(plain) is plain

    class Text(str):
        pass

    made = native.collapse_spaces(Text("a b"))
    assert made == "a b" and type(made) is str


def _eval_entries() -> list[Entry]:
    entries = []
    for n, line in enumerate((EVAL / "items.jsonl").read_text(encoding="utf-8").splitlines()):
        data = json.loads(line)
        entries.append(
            Entry(
                f"e{n}",
                data["title"],
                link=data.get("link"),
                summary=data["summary"],
                categories=tuple(data["categories"]),
            )
        )
    return entries


def _tricky_entries(count: int) -> list[Entry]:
    """Entries of tricky text, with summaries short and long, content or none, HTML in them."""
    rng = random.Random(7)
    entries = []
    for n in range(count):
        words = [tricky_text(rng, glue=False) for _ in range(rng.randint(0, 12))]
        summary = " ".join(words[: rng.randint(0, len(words))])
        content = "<p>" + "</p><p>".join(words) + "</p>" if rng.random() < 0.5 else ""
        entries.append(
            Entry(f"t{n}", tricky_text(rng, glue=False), summary=summary, content=content)
        )
    return entries


def _filed(config_entries: list[Entry]) -> tuple[list[Filing], list[Filing]]:
    """Each entry filed in C and in Python (a processor of each), a batch at a time."""
    config = load_config(EVAL / "feeds.yaml")
    source = config.sources[0].id
    fast = Processor(config, index=False)
    with pure_python():
        slow = Processor(config, index=False)
    got, expected = [], []
    for start in range(0, len(config_entries), 25):
        batch = config_entries[start : start + 25]
        got += fast.file_all(source, batch)
        with pure_python():
            expected += slow.file_all(source, batch)
    return got, expected


def test_filing_in_c_is_filing_in_python(native: ModuleType) -> None:
    """Sections, topics with their reasons, and fingerprints: equal, item for item, on the
    labelled set and on tricky text (fingerprints made from the content where the summary is
    short, none where there is too little text)."""
    entries = _eval_entries() + _tricky_entries(3000)
    got, expected = _filed(entries)
    assert got == expected
    prints = [f.fingerprint for f in got]
    assert sum(p is None for p in prints) > 100 and sum(p is not None for p in prints) > 1000
    assert sum(bool(f.topics) for f in got) > 100


def test_a_fingerprint_in_c_is_the_shingles_minhash(native: ModuleType) -> None:
    """Against the reference the Python code is tested by (the shingles' MinHash)."""
    for entry in _eval_entries()[:50]:
        with pure_python():
            hashes = prints.shingles(entry)
        made = prints.fingerprint(entry)
        assert made is not None and len(hashes) >= prints.MIN_SHINGLES
        assert made[: 4 * prints.NUM_PERM] == dedupe.minhash_values(hashes).astype("<u4").tobytes()


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} is absent (a clone without ../shared)")
def test_every_corpus_entry_is_filed_in_c_as_in_python(native: ModuleType) -> None:
    entries: list[Entry] = []
    now = datetime(2030, 1, 1, tzinfo=UTC)
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".md"):
        try:
            parsed = parse_document(path.read_bytes(), "http://example.com/feed", now)
        except ParseError:
            continue
        entries += parsed.entries
    assert len(entries) > 1000
    got, expected = _filed(entries)
    differ = [e.title for e, a, b in zip(entries, got, expected, strict=True) if a != b]
    assert not differ, f"{len(differ)} entries filed differently: {differ[:5]}"
    # real-world text beyond ASCII among them (37 titles today), which Python folds
    assert sum(not e.title.isascii() for e in entries) > 30


def test_a_term_index_finds_in_c_what_it_finds_in_python(native: ModuleType) -> None:
    groups = [["West Bank", "*غزة", "Gaza*"], ["Türkiye", "gaza ecole", "*stan* fire"]]
    fast = TermIndex(groups)
    with pure_python():
        slow = TermIndex(groups)
    assert fast._native is not None and slow._native is None
    rng = random.Random(3)
    for _ in range(3000):
        fields = [Field(name, tricky_text(rng, glue=True)) for name in ("title", "summary")]
        again = [Field(f.name, f.text) for f in fields]
        if rng.random() < 0.3:  # folded already (a section's category rule did): kept as it is
            assert fields[0].folded is not None
        with pure_python():
            expected = [[(h.term, h.field, h.text) for h in found] for found in slow.scan(again)]
        got = [[(h.term, h.field, h.text) for h in found] for found in fast.scan(fields)]
        assert got == expected, [f.text for f in fields]


def test_every_field_is_folded_and_searched_in_one_call_as_one_at_a_time(
    native: ModuleType,
) -> None:
    """`WordSet.find_fields` against `folded_words` and `find` of each field: the folded words it
    leaves as each field's `folded`, and the fields, places and words it finds; and None where
    a field holds a regex term's letters (`needs`, as `caseless` and `in` find them)."""
    from aggregator.process.terms import caseless
    from aggregator.process.text import find_in_fields

    words = FIRST_WORDS[1] + FIRST_WORDS[3]
    found = native.WordSet(words)
    rng = random.Random(9)
    pieces = [*TRICKY, "Gaza", "pakistani", "İstanbul", "5½", "غزه", " ", "", "e_e", "Kyiv"]
    for _ in range(2000):
        fields = [
            Field("categories", "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))))
            for _ in range(rng.randint(0, 6))
        ]
        with pure_python():
            folded = [folded_words(f.text) for f in fields]
        if fields and rng.random() < 0.3:
            fields[0].__dict__["folded"] = folded[0] = "gaza ab kyiv"  # made: searched as it is
        expected = [(n, found.find(text)) for n, text in enumerate(folded) if found.find(text)]
        places = {id(field): n for n, field in enumerate(fields)}  # (equal fields are not one)
        needs = rng.choice([None, ("gaza",), ("kyiv", "bul")])
        made = find_in_fields(found, fields, needs)
        if needs and any(need in caseless(f.text) for f in fields for need in needs):
            assert made is None  # a regex term's letters: the fields are searched one by one
            continue
        assert made is not None
        got = [(places[id(field)], starts) for field, starts in made]
        assert got == expected, [f.text for f in fields]
        assert [f.__dict__.get("folded", "") for f in fields] == folded
    with pytest.raises(TypeError, match="str"):
        found.find_fields([Field("title", 5)], {}, str, 4, b"")  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        found.find_fields([object()], {}, str, 4, b"")


def test_a_headlines_numbers_are_found_in_c_as_the_regex_finds_them(native: ModuleType) -> None:
    """`numbers` against the regex it stands in for (its backtracking included: `1.5x` holds
    the number 1), on random text of digits of several scripts, separators, letters and
    characters that are digits but not decimal ones; and `numbers_bytes` against them hashed
    and packed in Python (digits of other scripts written as ASCII, repeats once, the lowest
    four, a number longer than the C buffer)."""
    rng = random.Random(11)
    pool = [*"0123456789.,_ -ax", "٣", "²", "é", "Ⅻ", "١", "߁", "W"]
    for _ in range(100_000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 14)))
        assert native.numbers(text) == prints._NUMBER.findall(text), repr(text)
    assert native.numbers("Day 1,727: 2.5x more, 3.4.5 and 12a 7") == ["1,727", "2", "3.4.5", "7"]
    titles = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(20_000)]
    titles += ["Day 1,727: 7, 7.0, ٣,٣ and 3,3", "1 2 3 4 5 6 " + "9" * 200]
    for title in titles:
        with pure_python():
            expected = prints._numbers_bytes(title)
        assert native.numbers_bytes(title, prints.NUMBERS) == expected, repr(title)
    assert sum(prints._numbers_bytes(t) != prints._NO_NUMBERS for t in titles) > 5_000


def test_a_regex_terms_letters_are_looked_for_in_c_as_in_the_lowered_text(
    native: ModuleType,
) -> None:
    """`caseless_holds` against `caseless` and `in`; and what it rests on: of every character
    beyond ASCII, only dotted capital I and the Kelvin sign lower to text holding ASCII (both
    among the four `caseless` writes as ASCII)."""
    from aggregator.process.terms import _CASELESS_LETTERS, caseless

    lowering_to_ascii = {
        c for c in range(0x80, 0x110000) if any(ch.isascii() for ch in chr(c).lower())
    }
    assert lowering_to_ascii == {0x130, 0x212A}
    assert {ord(c) for c in _CASELESS_LETTERS} >= lowering_to_ascii
    rng = random.Random(12)
    pool = list("sudanturkeyTURKEYSudan \n-") + list(_CASELESS_LETTERS) + ["é", "ß", "ﬁ", "Σ", "丁"]
    needs = ["sudan", "turkey", "ski", "ei", "s\nk"]
    for _ in range(20_000):
        texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 12))) for _ in range(3)]
        chosen = rng.sample(needs, rng.randint(1, 3))
        expected = any(need in caseless(text) for text in texts for need in chosen)
        assert native.caseless_holds(texts, chosen) is expected, (texts, chosen)
    assert native.caseless_holds([], ["abc"]) is False
    with pytest.raises(ValueError, match="ASCII"):
        native.caseless_holds(["x"], ["é"])
    with pytest.raises(TypeError, match="str"):
        native.caseless_holds([5], ["abc"])


class _Prints:
    """Fingerprints of families of near-copies: a family's members differ in a few to most of
    their MinHash values (so pairs fall on both sides of the threshold and share some bands or
    none), and carry headline numbers that agree, differ or are absent."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.families: list[np.ndarray] = []

    def make(self, *, close: bool = False) -> bytes:
        """`close`: a near-copy of the latest family (a feed repeating itself)."""
        rng = self.rng
        if not self.families or (rng.random() < 0.3 and not close):
            self.families.append(rng.integers(0, 2**32, prints.NUM_PERM, dtype=np.uint32))
        family = -1 if close else int(rng.integers(0, len(self.families)))
        base = self.families[family].copy()
        changes = int(rng.integers(0, 6 if close else 90))
        changed = rng.choice(prints.NUM_PERM, changes, replace=False)
        base[changed] = rng.integers(0, 2**32, len(changed), dtype=np.uint32)
        numbers = np.zeros(prints.NUMBERS, dtype=np.uint32)
        if rng.random() < 0.5:
            numbers[: int(rng.integers(1, 5))] = rng.integers(1, 4, 1, dtype=np.uint32)
        return np.concatenate([base, numbers]).astype("<u4").tobytes()


def test_confirming_a_candidate_in_c_is_confirming_it_in_numpy(native: ModuleType) -> None:
    """`compare` against the numpy code it stands in for: scores on both sides of the threshold,
    headline numbers absent, shared, disjoint or partly shared, in any slot."""
    maker, rng = _Prints(9), np.random.default_rng(9)
    made = [maker.make(close=n % 3 == 0) for n in range(300)]
    for n in range(0, 300, 4):  # numbers of several values, in any of the four slots
        values = np.frombuffer(made[n], dtype="<u4").copy()
        values[prints.NUM_PERM :] = rng.choice([0, 0, 5, 6, 7, 8], prints.NUMBERS)
        made[n] = values.astype("<u4").tobytes()
    index = dedupe.SimilarityIndex(0.5, timedelta(hours=72), bits=8)
    outcomes = set()
    for _ in range(3000):
        a, b = made[int(rng.integers(300))], made[int(rng.integers(300))]
        got = dedupe._compared(a, b), dedupe.alike(a, b, 0.5), dedupe.similarity(a, b)
        with pure_python():
            assert got == (dedupe._compared(a, b), dedupe.alike(a, b, 0.5), dedupe.similarity(a, b))
        outcomes.add((got[0][0] >= 0.5, got[0][1]))
    assert outcomes == {(True, True), (True, False), (False, True), (False, False)}
    candidates = list(enumerate(made[1:60], start=1))
    confirmed = index.confirm(made[0], candidates)
    with pure_python():
        assert index.confirm(made[0], candidates) == confirmed
    with pytest.raises(ValueError, match="shorter"):
        native.compare(made[0], made[1][:-1], prints.NUM_PERM, prints.NUMBERS)
    with pytest.raises(ValueError, match="shorter"):
        native.compare(made[0], made[1], -1, prints.NUMBERS)
    sigs = np.frombuffer(b"".join(made[:25]), dtype="<u4").reshape(25, -1)
    keys = index._band_keys(sigs)
    with pure_python():
        assert np.array_equal(index._band_keys(sigs), keys)
    with pytest.raises(ValueError, match="fit"):
        native.band_keys(np.zeros((2, 5), np.uint32), 5, 2, 3)


def _same_index(fast: dedupe.SimilarityIndex, slow: dedupe.SimilarityIndex) -> None:
    assert len(fast._runs) == len(slow._runs)
    for a, b in zip(fast._runs, slow._runs, strict=True):
        assert (a.base, a.count, a.items) == (b.base, b.count, b.items)
        assert np.array_equal(a.keys, b.keys) and np.array_equal(a.slots, b.slots)
    assert np.array_equal(fast._bits.words, slow._bits.words)


@pytest.mark.parametrize("bits", [8, 16])
def test_the_story_index_in_c_answers_what_numpy_answers(
    native: ModuleType, bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filter, the lookups through fences, the scoring and the merges in C against the numpy
    code, step by step: batches of every size (a big one makes full runs), items removed and
    expired (compaction), queries with and without `after`. Small runs and fences, so that
    every path is taken many times."""
    monkeypatch.setattr(dedupe, "_FENCED_FROM", 64)
    monkeypatch.setattr(dedupe, "_FENCE_STEP", 8)
    indexes = []
    for _ in range(2):
        index = dedupe.SimilarityIndex(0.5, timedelta(hours=72), bits=bits)
        index.RECENT, index.YOUNG, index.OLD = 16, 128, 512
        indexes.append(index)
    fast, slow = indexes
    prints, rng = _Prints(5), random.Random(5)
    start = datetime(2026, 11, 20, tzinfo=UTC)
    next_id, found, within, compacted = 1, 0, 0, 0
    for step in range(160):
        size = rng.choice([1, 3, 25, 25, 40] + ([700] if step % 50 == 0 else []))
        fps = [prints.make(close=step % 25 == 7) for _ in range(size)]  # some deep buckets
        whens = [start + timedelta(minutes=step * 20 + rng.randrange(120)) for _ in fps]
        after = rng.choice([0, 0, max(1, next_id - 300)])
        got = fast.similar_many(fps, whens, after)
        with pure_python():
            assert slow.similar_many(fps, whens, after) == got
            expected_within = slow.similar_within(fps, whens)
        assert fast.similar_within(fps, whens) == expected_within
        assert fast.compared == slow.compared
        found += sum(map(len, got))
        within += sum(map(len, expected_within))
        rows = [
            (next_id + n, fp, when) for n, (fp, when) in enumerate(zip(fps, whens, strict=True))
        ]
        next_id += size
        fast.add_many(rows)
        with pure_python():
            slow.add_many(rows)
        if step % 7 == 3:
            gone = rng.sample(range(1, next_id), 40)
            fast.remove(gone)
            with pure_python():
                slow.remove(gone)
        if step % 20 == 19:
            now = start + timedelta(minutes=step * 20, hours=60)
            size_before = fast._size
            with pure_python():
                expired = slow.expire(now)
            assert fast.expire(now) == expired
            compacted += fast._size < size_before
        _same_index(fast, slow)
    assert found > 500 and within > 50  # matches were there to find
    assert compacted  # and compaction ran (the dead were reclaimed)


@pytest.mark.parametrize("slot_type", [np.int32, np.uint16])
def test_a_batchs_band_keys_are_sorted_in_c_as_numpy_sorts_them(
    native: ModuleType, slot_type: type[np.generic]
) -> None:
    """`sort_pairs` against numpy's stable argsort: keys with many repeats (whose slots keep
    their order), keys sharing some of their bytes (passes skipped), none, one, and a window's
    worth."""
    rng = np.random.default_rng(3)
    for size in [0, 1, 2, 7, 1050, 1050, 50_000]:
        for keys in (
            rng.integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32),
            rng.integers(0, 40, size, dtype=np.uint32) * np.uint32(0x01000100),  # shared bytes
            np.full(size, 7, dtype=np.uint32),
        ):
            slots = rng.integers(0, 60_000, size).astype(slot_type)
            order = np.argsort(keys, kind="stable")
            got_keys, got_slots = native.sort_pairs(keys, slots)
            assert np.frombuffer(got_keys, np.uint32).tolist() == keys[order].tolist()
            assert np.frombuffer(got_slots, slot_type).tolist() == slots[order].tolist()
    with pytest.raises(ValueError, match="as many"):
        native.sort_pairs(np.zeros(3, np.uint32), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="4-byte"):
        native.sort_pairs(np.zeros(3, np.uint64), np.zeros(3, np.int32))


def test_the_c_part_refuses_or_survives_what_callers_never_pass(native: ModuleType) -> None:
    """Found by a review's fuzzing: a huge word limit overflowed a buffer's size, a set never
    initialised was read through a null pointer, and initialising one again leaked the old."""
    words = " ".join(f"w{n}" for n in range(5000))
    a, b = prints._A_BYTES, prints._B_BYTES
    made = native.signature("", words, "", 2**62, 20, a, b, 4)
    assert made == native.signature("", words, "", 5000, 20, a, b, 4)  # every word, no overflow
    with pytest.raises(ValueError, match="counts"):
        native.signature("", words, "", -1, 20, a, b, 4)
    empty = native.WordSet.__new__(native.WordSet)
    assert not empty.holds("a") and empty.find("a b") == [] and empty.find_written("a") == []
    # the twentieth stop's functions: counts out of range, needs they cannot search for
    from aggregator.process.text import _MARK_RANGES, folded_token

    with pytest.raises(ValueError, match="count"):
        native.numbers_bytes("1 2", -1)
    with pytest.raises(ValueError, match="count"):
        native.numbers_bytes("1 2", 1 << 40)
    assert native.numbers_bytes("", 0) == b""
    assert native.words_text("é a", -1, 0, 2, _MARK_RANGES, folded_token) is None
    assert native.words_text("é a", 0, 0, -5, _MARK_RANGES, folded_token) is None
    with pytest.raises(ValueError, match="ASCII"):
        empty.find_fields([Field("title", "x")], {}, str, 4, b"", ["é"])
    with pytest.raises(ValueError, match="marks"):
        empty.find_fields([Field("title", "x")], {}, str, 4, b"abc")
    assert empty.find_fields([Field("title", "a b")], {}, str, 4, b"", ["zz"]) == []
    assert native.strip_tags("<p>x</p>", empty) == "x"
    again = native.WordSet(["gaza"])
    again.__init__(["syria*"])
    assert again.holds("syrian") and not again.holds("gaza")
    # the story index's functions check the arrays they are given against what they will touch
    keys, offsets = np.arange(4, dtype=np.uint32), np.zeros(4, dtype=np.uint16)
    bloom = np.zeros(2, dtype=np.uint64)
    with pytest.raises(ValueError, match="size"):
        native.bloom_add(bloom, 129, keys)  # more bits than the words hold
    with pytest.raises(ValueError, match="4-byte"):
        native.bloom_add(bloom, 128, keys.astype(np.uint64))
    with pytest.raises(ValueError, match="count"):
        native.lookup(keys, bloom, 128, 1, [(keys, offsets, 5, 0, None, 1)])
    with pytest.raises(ValueError, match="fences"):
        native.lookup(keys, bloom, 128, 1, [(keys, offsets, 4, 0, keys[:1], 2)])
    with pytest.raises(ValueError, match="room"):
        native.merge(keys, offsets, 3, keys[:2].copy(), offsets[:2].copy(), 0)
    with pytest.raises(ValueError, match="own"):
        native.merge(keys, offsets, 0, keys, offsets, 0)
    blocks = [np.zeros((2, prints.NUM_PERM), dtype=np.uint8)]
    sigs = np.zeros((1, prints.FP_WORDS), dtype=np.uint32)
    ids, alive, times = np.zeros(2, np.int64), np.ones(2, bool), np.zeros(2)
    numbers = np.zeros((2, prints.NUMBERS), np.uint32)
    one, slot = np.zeros(1, np.int64), np.full(1, 2, np.int32)  # slot 2 of 2
    with pytest.raises(ValueError, match="out of range"):
        native.verify(one, slot, 1, 0, ids, alive, times, times[:1], 1.0, sigs, blocks, 2, 8,
                      numbers, 0.5, 10)  # fmt: skip
    assert native.verify(one, slot - 1, 1, 0, ids, alive, times, times[:1], 1.0, sigs, blocks,
                         2, 8, numbers, 0.5, 10) == [(0, 0, 1.0)]  # fmt: skip
    # Found by the fifteenth stop's review: a huge block size wrapped its byte count and read
    # past the block; a list changed while it was read (a run's count an object whose __index__
    # empties it) was read from freed memory; a time that is NaN was kept, where numpy drops it
    with pytest.raises(ValueError, match="block"):
        native.verify(one, slot - 1, 1, 0, ids, alive, times, times[:1], 1.0, sigs, blocks,
                      (1 << 57) + 1, 8, numbers, 0.5, 10)  # fmt: skip
    nan = np.array([0.0, np.nan])  # slot 1's
    assert native.verify(one, slot - 1, 1, 0, ids, alive, nan, times[:1], 1.0, sigs, blocks,
                         2, 8, numbers, 0.5, 10) == []  # fmt: skip
    runs: list[tuple[object, ...]] = []

    class Emptying:
        def __index__(self) -> int:
            runs.clear()
            return 4

    runs += [(keys, offsets, Emptying(), 0, None, 1), (keys, offsets, 4, 0, None, 1)]
    full = np.full(2, 2**64 - 1, dtype=np.uint64)
    owners, _ = native.lookup(keys, full, 128, 1, runs)  # the runs as they were given
    assert len(owners) == 2 * 4 * 8
    with pytest.raises(ValueError, match="aligned"):
        native.bloom_add(bloom, 128, np.zeros(5, dtype=np.uint8)[1:].view(np.uint32))


@pytest.mark.parametrize("spread", ["even", "low", "high", "repeated", "clustered"])
def test_a_lookup_through_fences_finds_every_key_however_the_keys_lie(
    native: ModuleType, spread: str
) -> None:
    """The C lookup guesses a key's fence from its value (band keys are hashes, spread evenly)
    and widens the search from there: keys bunched at either end, repeated, or in clusters
    must be found all the same, each (query, slot) pair once, as a plain search finds them."""
    rng = np.random.default_rng(len(spread))
    count = 5000
    if spread == "even":
        keys = rng.integers(0, 2**32, count, dtype=np.uint64)
    elif spread == "low":
        keys = rng.integers(0, 3000, count, dtype=np.uint64)
    elif spread == "high":
        keys = rng.integers(2**32 - 3000, 2**32, count, dtype=np.uint64)
    elif spread == "repeated":
        keys = rng.choice(np.array([0, 7, 2**31, 2**32 - 1], dtype=np.uint64), count)
    else:
        centres = rng.integers(0, 2**32 - 2**20, 5, dtype=np.uint64)
        keys = rng.choice(centres, count) + rng.integers(0, 200, count, dtype=np.uint64)
    keys = np.sort(keys).astype(np.uint32)
    offsets = rng.permutation(count).astype(np.int32)
    for step in (1, 3, 64):
        fences = keys[::step].copy()
        query = np.concatenate(
            [rng.choice(keys, 300), rng.integers(0, 2**32, 300, dtype=np.uint64).astype(np.uint32),
             np.array([0, 1, 2**32 - 1], dtype=np.uint32)]
        )  # fmt: skip
        full = np.full(2, 2**64 - 1, dtype=np.uint64)  # a filter holding every key
        runs = [(keys, offsets, count, 10, fences, step)]
        owners, slots = native.lookup(query, full, 128, 1, runs)
        got = sorted(
            zip(np.frombuffer(owners, np.int64).tolist(), np.frombuffer(slots, np.int32).tolist(),
                strict=True)
        )  # fmt: skip
        lows, highs = np.searchsorted(keys, query), np.searchsorted(keys, query, "right")
        expected = sorted(
            (q, 10 + int(offsets[at]))
            for q, (low, high) in enumerate(zip(lows.tolist(), highs.tolist(), strict=True))
            for at in range(low, high)
        )
        assert got == expected, (spread, step)
        assert len(expected) >= 300  # the keys drawn from the run were all there to find


def test_a_filter_at_its_largest_works_in_c_as_in_numpy(native: ModuleType) -> None:
    """A filter is capped at 2**32 bits, which the C code refused at first (found by review):
    every add and lookup of an index of some 358 million keys would have failed."""
    bits = dedupe._Bits(1 << 29)  # calloc'd: only the words written cost memory
    assert bits.size == 1 << 32
    keys = np.arange(0, 2**32 - 1, 2**32 // 1000, dtype=np.uint32)
    bits.add(keys)
    with pure_python():
        reference = dedupe._Bits(1 << 29)
        reference.add(keys)
    assert bits.may_hold(keys).all()
    assert np.array_equal(np.nonzero(bits.words)[0], np.nonzero(reference.words)[0])


def test_the_pure_python_switch_is_honoured() -> None:
    """`AGGREGATOR_PURE_PYTHON=1` leaves the C part out, in a process of its own."""
    import subprocess
    import sys

    code = "from aggregator import speedups; print(speedups.native is None)"
    env = {**os.environ, "AGGREGATOR_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
    assert re.search("Python", speedups.describe()) or speedups.native is not None


def test_a_helper_files_and_fingerprints_without_numpy(native: ModuleType) -> None:
    """Where the C part is built, a helper process prepares and files documents without importing
    numpy (40-60 ms before its first document, 12 MiB each): fingerprints are made in C, and the
    story index, which needs numpy, lives in the poller. Run in a process of its own, as a helper
    is, with the helper's own entry points."""
    code = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from aggregator import prepare\n"
        "from aggregator.config import load_config\n"
        "prepare._start(load_config('config/feeds.yaml'))\n"
        "body = sys.stdin.buffer.read()\n"
        "done = prepare._prepare_here(body, 'https://example.org/feed', datetime.now(UTC),"
        " None, 'bbc-world')\n"
        "made = [f.fingerprint for f in done.filings.values()]\n"
        "assert made and all(len(f) == 4 * 132 for f in made if f), made\n"
        "assert any(made), 'no entry long enough for a fingerprint'\n"
        "assert 'numpy' not in sys.modules, 'a helper imported numpy'\n"
    )
    words = " ".join(f"word{n} Gaza ceasefire talks" for n in range(40))
    items = "".join(
        f"<item><guid>g{n}</guid><title>Story {n} of the day</title>"
        f"<link>https://example.org/{n}</link><description>{words} {n}</description></item>"
        for n in range(5)
    )
    body = '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
    body += f"<link>https://example.org/</link><description>d</description>{items}</channel></rss>"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=body,
        cwd=ROOT,
        env={**environment, "AGGREGATOR_CACHE_DIR": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert native is not None
    assert result.returncode == 0, result.stderr[-2000:]
