"""The matching engine, sections, topics and filters: pure functions, tested with plain values."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aggregator.config import Config, Filter, Section, Source, Topic
from aggregator.process.categorise import STORED_HITS, Categoriser, TopicVerdict
from aggregator.process.dedupe import SimilarityIndex
from aggregator.process.filters import EntryFilter, ItemFilter
from aggregator.process.fingerprint import fingerprint
from aggregator.process.pipeline import Processor
from aggregator.process.terms import (
    Hit,
    PathRule,
    TermIndex,
    Terms,
    required_text,
    term_problem,
)
from aggregator.process.text import WORD, Field, ItemText, fold, folded_words
from aggregator.types import Entry, Item

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def entry(title: str = "", summary: str = "", **kw: Any) -> Entry:
    return Entry(key=kw.pop("key", "k"), title=title, summary=summary, **kw)


def matched(terms: list[str], text: str) -> list[tuple[str, str]]:
    return [(hit.term, hit.text) for hit in Terms(terms).hits([Field("title", text)])]


# -- folding and terms ----------------------------------------------------------------------


def test_folding_ignores_case_accents_and_letter_variants() -> None:
    assert fold("Türkiye") == "turkiye"
    assert fold("ISTANBUL") == fold("İstanbul") == "istanbul"
    assert fold("Ağrı") == "agri"  # dotless ı
    assert fold("Straße") == "strasse"
    assert folded_words("Réfugiés, à Genève!") == "refugies a geneve"
    # Arabic: vowel marks, hamza forms of alef, ta marbuta, tatweel
    assert folded_words("غَزَّة") == folded_words("غزة") == folded_words("غـزه")
    assert folded_words("أوكرانيا") == folded_words("اوكرانيا")


@pytest.mark.parametrize(
    ("term", "text", "expected"),
    [
        ("Turkiye", "Talks in Türkiye resume", "Türkiye"),
        ("Türkiye", "TURKIYE and Greece", "TURKIYE"),
        ("İstanbul", "Summit in ISTANBUL", "ISTANBUL"),
        ("Palestin*", "Palestinians return", "Palestinians"),
        ("*stan", "Kazakhstan and Russia", "Kazakhstan"),
        ("West Bank", "raids in the West-Bank town", "West-Bank"),
        ("West Bank", "the west\nbank", "west\nbank"),
        ("COP2*", "At COP29, negotiators", "COP29"),
        ("غزة", "قصف على غَزَّة اليوم", "غَزَّة"),
        ("*غزة", "مستشفيات بغزة", "بغزة"),
        ("Réfugiés", "refugies arrive", "refugies"),
    ],
)
def test_a_term_matches_on_word_boundaries_ignoring_case_and_accents(
    term: str, text: str, expected: str
) -> None:
    assert matched([term], text) == [(term, expected)]


@pytest.mark.parametrize(
    ("term", "text"),
    [
        ("Gaza", "Gazans wait"),  # a word, not a prefix, unless it says *
        ("Iran", "Irani restaurant in Tirana"),
        ("West Bank", "west of the bank"),
        ("COP2*", "COP31 opens"),
        ("Sudan", "Sudanese"),
    ],
)
def test_a_term_does_not_match_inside_other_words(term: str, text: str) -> None:
    assert matched([term], text) == []


def test_regular_expressions_match_the_original_text_ignoring_case() -> None:
    assert matched([r"/(?<!South )\bSudan\b/"], "South Sudan and Sudan") == [
        (r"/(?<!South )\bSudan\b/", "Sudan")
    ]
    assert matched(["/(?-i:Turkey)/"], "turkey farms in Turkey") == [("/(?-i:Turkey)/", "Turkey")]
    assert matched([r"/u\.?n\.?/"], "The U.N. said") == [(r"/u\.?n\.?/", "U.N.")]


def test_every_occurrence_is_a_hit_and_names_its_term() -> None:
    hits = matched(["Gaza", "Rafah", "Palestin*"], "Gaza: Rafah crossing; Palestinians in Gaza")
    assert hits == [
        ("Gaza", "Gaza"),
        ("Rafah", "Rafah"),
        ("Palestin*", "Palestinians"),
        ("Gaza", "Gaza"),
    ]


# Pieces of text that folding, word splitting and the shortcuts must agree on: curly quotes and
# dashes, accents written both ways, a combining mark beside an ASCII word, ligatures, numbers
# that fold to two words, a tatweel, the Kelvin sign and the long s (which IGNORECASE would
# match as k and s), fullwidth letters, dotted capital I, Arabic, an emoji, underscores.
TRICKY = ["Gaza", "gaza", "GAZA", "Gazans", "Syria", "Damascus", "École", "ecole", "e\u0301cole",
          "Türkiye", "Turkiye", "aid", "said", "talks", "Kyiv", "\u212ayiv", "ſtorm", "storm",
          "Storms", "x_y", "5½", "ﬁre", "fire", "ـ", "\u0301", "\u093e", "Ｇａｚａ", "İstanbul",
          "غزة", "غزّة", "😀", "’", "“", "”", "—", "-", ".", ",", "™", " ", " ", "\n",
          "\xa0"]  # fmt: skip


def tricky_text(rng: random.Random, glue: bool) -> str:
    pieces = [rng.choice(TRICKY) for _ in range(rng.randint(0, 14))]
    return ("" if glue and rng.random() < 0.3 else " ").join(pieces)


@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize(
    "groups",
    [
        [["Gaza", "Gaza*", "aid"], ["syria", "Damascus", "ecole"], ["Gaza"], ["storm*", "fire"]],
        [["Türkiye", "غزة", "*stan*"], ["Kyiv", "istanbul", "5"], ["ﬁre", "e*e"]],
        [["West Bank", "Gaza"], ["gaza ecole", "syria"], ["storm* fire", "aid"]],  # phrases
        # phrases beside words only other letters spell (skipped in folded ASCII text)
        [["West Bank", "*غزة"], ["Türkiye", "gaza ecole", "*stan* fire"], ["غزة aid", "5"]],
    ],
)
def test_the_shortcuts_find_the_hits_looking_up_every_word_finds(
    whole: bool, groups: list[list[str]]
) -> None:
    """An index scans by its shortcuts (terms found by regex in the text as written, or in the
    folded text); forced to look up every folded word in Python, the same index finds the same
    hits (terms, fields, texts, order), on random text of tricky pieces, glued or spaced."""
    rng = random.Random(17 + whole + len(groups[0]))
    fast = TermIndex(groups, whole=whole)
    slow = TermIndex(groups, whole=whole)
    slow._by_regex = slow._one_word = False
    for _ in range(3000):
        fields = [Field(name, tricky_text(rng, glue=True)) for name in ("title", "summary")]
        expected = [[(h.term, h.field, h.text) for h in found] for found in slow.scan(fields)]
        got = [[(h.term, h.field, h.text) for h in found] for found in fast.scan(fields)]
        assert got == expected, [f.text for f in fields]
    assert TermIndex(groups[:1])._one_word is (groups[0][0] != "West Bank")


@pytest.mark.parametrize(
    "terms",
    [
        ["West Bank", "West", "Bank", "gaza ecole", "Gaza", "ecole syria"],
        ["storm* fire", "storm*", "fire aid", "aid", "*stan* fire", "fire"],
        ["gaza gaza", "Gaza", "said talks", "talks kyiv", "Kyiv"],
    ],
)
def test_a_list_of_terms_matches_as_one_regex_alternation_of_them(terms: list[str]) -> None:
    """Within a list, at each word the first term (in the list's order) matching there wins and
    the next hit starts after it: what one regex alternating the terms finds over the folded
    words, an independent reference for phrases overlapping each other and words."""
    index = TermIndex([terms, list(reversed(terms))])
    references = []
    for group in (terms, list(reversed(terms))):
        branches = [
            " ".join("[^ ]*".join(map(re.escape, w.split("*"))) for w in fold(t).split())
            for t in group
        ]
        alternation = "|".join(f"({branch})" for branch in branches)
        references.append(re.compile(f"(?<![^ ])(?:{alternation})(?![^ ])"))
    rng = random.Random(len(terms[0]))
    pieces = ["West", "Bank", "gaza", "ecole", "syria", "storms", "fire", "aid", "pakistani",
              "said", "talks", "Kyiv", "x", "—", "Gaza"]  # fmt: skip
    found = 0
    for _ in range(3000):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 16)))
        got = [[h.term for h in hits] for hits in index.scan([Field("title", text)])]
        folded = folded_words(text)
        expected = [
            [group[(m.lastindex or 0) - 1] for m in reference.finditer(folded)] if folded else []
            for group, reference in zip((terms, list(reversed(terms))), references, strict=True)
        ]
        assert got == expected, text
        found += sum(map(len, got))
    assert found > 3000


def test_folding_text_a_run_at_a_time_is_folding_it_whole() -> None:
    rng = random.Random(5)
    for _ in range(5000):
        text = tricky_text(rng, glue=True)
        assert folded_words(text) == " ".join(WORD.findall(fold(text))), text


@pytest.mark.parametrize(
    ("term", "problem"),
    [
        ("", "an empty term matches nothing"),
        ("*", "'*' has no letters or digits to match"),
        ("--", "'--' has no letters or digits to match"),
        ("/(/", "'/(/' is not a valid regular expression: missing ), unterminated subpattern"),
        ("/a?/", "'/a?/' matches an empty text, so it would match every item"),
    ],
)
def test_invalid_terms_are_explained(term: str, problem: str) -> None:
    assert (term_problem(term) or "").startswith(problem)
    assert term_problem("ok") is None and term_problem("/ok/") is None


def test_path_rules_match_paths_and_hosts() -> None:
    opinion = PathRule("/opinion*/")
    assert opinion.matches("https://www.aljazeera.com/opinions/2026/11/18/x")
    assert opinion.matches("https://news.example/world/OPINION/x")
    assert not opinion.matches("https://news.example/opinionated-piece")
    assert not opinion.matches(None)
    guardian = PathRule("theguardian.com/commentisfree/")
    assert guardian.matches("https://www.theguardian.com/commentisfree/2026/nov/18/x")
    assert not guardian.matches("https://example.com/commentisfree/x")
    assert not guardian.matches("https://notguardian.com/commentisfree/x")


# -- sections and topics --------------------------------------------------------------------


CONFIG = Config(
    sections=(
        Section("opinion", "Opinion", paths=("/commentisfree/",), categories=("Opinion",)),
        Section(
            "environment",
            "Environment",
            paths=("/environment/",),
            categories=("Climate crisis", "Environment*"),
        ),
        Section("world", "World"),
    ),
    topics=(
        Topic(
            "climate",
            "Climate",
            keywords=("climate", "emissions"),
            exclude=("political climate",),
            fields=("title", "summary"),
        ),
        Topic("palestine", "Palestine", keywords=("Gaza", "West Bank", "Palestin*")),
        Topic("ukraine", "Ukraine", keywords=("Ukrain*", "Kyiv"), min_matches=2),
        Topic("energy", "Energy"),
    ),
    sources=(
        Source("wire", "https://wire.example/feed", "world"),
        Source("green", "https://green.example/feed", "environment", topics=("energy",)),
    ),
)


def test_the_section_comes_from_a_path_rule_then_a_category_rule_then_the_source() -> None:
    rules = Categoriser(CONFIG)
    by_path = rules.section(
        "wire",
        entry("x", link="https://theguardian.com/commentisfree/a", categories=("Climate crisis",)),
    )
    assert (by_path.section_id, by_path.rule, by_path.pattern) == (
        "opinion",
        "path",
        "/commentisfree/",
    )
    by_category = rules.section("wire", entry("x", categories=("World news", "Climate crisis")))
    assert (by_category.section_id, by_category.rule, by_category.matched) == (
        "environment",
        "category",
        "Climate crisis",
    )
    # a category must equal the term (a wildcard aside): "Opinion polls" is not "Opinion"
    default = rules.section("wire", entry("x", categories=("Opinion polls",)))
    assert (default.section_id, default.rule) == ("world", "source")
    assert "source's section" in default.describe()


def test_a_section_from_categories_is_remembered_within_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a list of categories decides is remembered (feeds repeat theirs): the same answer
    each time, a path rule still first, the source's section where they decide nothing, and no
    more lists kept than the bound."""
    monkeypatch.setattr("aggregator.process.categorise._CATEGORIES_REMEMBERED", 3)
    rules = Categoriser(CONFIG)
    lists = [("Climate crisis",), ("World news", "Climate crisis"), ("Opinion polls",), ("x",)]
    expected = [("environment", "category"), ("environment", "category"), ("world", "source")]
    expected.append(("world", "source"))
    for _ in range(3):
        for categories, want in zip(lists, expected, strict=True):
            chosen = rules.section("wire", entry("x", categories=categories))
            assert (chosen.section_id, chosen.rule) == want
            assert len(rules._by_categories) <= 3
    # remembered by categories, not by source or link: a path rule still wins, and the
    # source's own section is the source's
    by_path = rules.section(
        "wire", entry("x", link="https://theguardian.com/commentisfree/a", categories=lists[0])
    )
    assert by_path.section_id == "opinion"
    assert rules.section("green", entry("x", categories=lists[2])).section_id == "environment"


def test_topics_carry_the_words_that_matched() -> None:
    item = entry(
        "Gaza ceasefire holds",
        "<p>Aid reaches the <b>West</b> Bank &amp; Gaza</p>",
        categories=("Middle East",),
    )
    found = Categoriser(CONFIG).categorise("wire", item)
    assert found.topic_ids == ("palestine",)
    hits = [(h.field, h.text) for h in found.topics[0].hits]
    assert hits == [("title", "Gaza"), ("summary", "West Bank"), ("summary", "Gaza")]


def test_exclude_terms_fields_and_minimum_matches() -> None:
    rules = Categoriser(CONFIG)
    verdicts = {
        v.topic_id: v
        for v in rules.verdicts(
            "wire",
            entry(
                "A tense political climate before the vote",
                "Emissions rose.",
                content="Kyiv said nothing.",
            ),
        )
    }
    assert not verdicts["climate"].assigned
    assert "excludes it" in verdicts["climate"].describe()
    assert not verdicts["ukraine"].assigned  # one hit, two needed
    assert "1 of the 2 matches needed" in verdicts["ukraine"].describe()
    # climate only looks at title and summary: content alone does not count
    quiet = rules.verdicts("wire", entry("Budget", "Nothing.", content="climate climate"))
    assert not next(v for v in quiet if v.topic_id == "climate").hits
    twice = rules.categorise("wire", entry("Ukraine talks", "Ukrainian and Kyiv officials"))
    assert "ukraine" in twice.topic_ids


def test_a_source_gives_its_fixed_topics_to_every_item() -> None:
    found = Categoriser(CONFIG).categorise("green", entry("Wind farms", "Nothing else."))
    assert found.topic_ids == ("energy",)
    assert found.topics[0].describe() == "every item of its source gets this topic"


def test_filing_turns_decisions_into_what_storage_keeps() -> None:
    filing = Processor(CONFIG).file("wire", entry("Gaza talks", "Officials met in Cairo today."))
    assert filing.section_id == "world"
    assert filing.section_reason is None  # the source's own section: no reason stored
    assert list(filing.topics) == ["palestine"]
    assert json.loads(filing.topics["palestine"])["hits"] == [
        {"term": "Gaza", "field": "title", "text": "Gaza"}
    ]
    assert filing.fingerprint is not None


def test_filing_keeps_the_first_distinct_hits_of_a_topic_and_how_many_matches() -> None:
    """An item that names Gaza thirty ways keeps the first ten as the reason, each once, and
    the count of all matches; thirty times the same words are kept once."""
    summary = " ".join(f"Gaza{'!' * n} GAZA day {n}." for n in range(15))
    filing = Processor(CONFIG).file("wire", entry("Talks", summary))
    stored = json.loads(filing.topics["palestine"])
    assert stored["count"] == 30
    assert stored["hits"][:2] == [
        {"term": "Gaza", "field": "summary", "text": "Gaza"},
        {"term": "Gaza", "field": "summary", "text": "GAZA"},
    ]
    assert len(stored["hits"]) == 2  # two distinct ways of writing it
    verdict = TopicVerdict.from_json("palestine", stored)
    assert verdict.describe().endswith("(30 matches in all)")
    many = Processor(CONFIG).file("wire", entry("Talks", " ".join(f"Gaza{n}x" for n in range(30))))
    assert "palestine" not in many.topics  # Gaza0x is no Gaza: a word matches whole
    cases = [
        "".join(c.upper() if n >> i & 1 else c for i, c in enumerate("gaza")) for n in range(16)
    ]
    kept = Processor(CONFIG).file("wire", entry("Talks", " ".join(cases))).topics["palestine"]
    assert [h["text"] for h in json.loads(kept)["hits"]] == cases[:STORED_HITS]
    assert json.loads(kept)["count"] == 16


def test_a_path_rule_matches_whatever_shape_the_link_has() -> None:
    """The section a link gets against every path rule tried on the link (`PathRule.matches`),
    on links in any case, beyond ASCII, with tabs and line breaks (which urlsplit drops), with
    and without a scheme: the search of the whole link that rules most links out first must
    rule out none that a rule matches."""
    config = Config(
        sections=(
            Section("opinion", "Opinion", paths=("/commentisfree/", "news.example/op*/")),
            Section("turkey", "Turkey", paths=("/i̇stanbul/", "/ıstanbul/", "/world/*/tr")),
            Section("world", "World"),
        ),
        sources=(Source("wire", "https://wire.example/feed", "world"),),
    )
    rules = Categoriser(config)
    rng = random.Random(8)
    pieces = ["https://", "http://NEWS.example", "news.example", "/", "commentisfree", "Comment",
              "isFree", "op", "opinion", "OPED", "/world/", "x", "tr", "TR", "İstanbul", "ıstanbul",
              "\t", "\n", " ", "?q=/commentisfree/", "#/op/", "sub.news.example",
              ":8080"]  # fmt: skip
    chosen = 0
    for _ in range(20_000):
        link = "".join(rng.choices(pieces, k=rng.randint(1, 9)))
        expected = next((sid for sid, rule in rules._paths if rule.matches(link)), "world")
        got = rules.section("wire", entry("x", link=link))
        assert got.section_id == expected, link
        chosen += expected != "world"
    assert chosen > 100


def test_filing_keeps_what_categorising_decides() -> None:
    """`Processor.file` (which makes no verdicts) against `categorise`: the same section with its
    reason, and each topic the item gets with the JSON text of its verdict, for items that get
    a topic from their source, from words in a field its topic looks at or not, by enough
    matches or too few, or are excluded."""
    processor = Processor(CONFIG)
    rng = random.Random(5)
    words = ["Gaza", "West Bank", "climate", "emissions", "political climate", "Kyiv",
             "Ukrainian", "Opinion", "talks", "the", "Palestinians"]  # fmt: skip
    got = 0
    for n in range(600):
        made = entry(
            " ".join(rng.choices(words, k=rng.randint(1, 5))),
            " ".join(rng.choices(words, k=rng.randint(0, 12))),
            link=rng.choice([None, "https://x.example/environment/a", "https://x.example/a"]),
            categories=tuple(
                rng.sample(["Opinion", "Environment news", "World"], rng.randint(0, 2))
            ),
        )
        source = rng.choice(["wire", "green"])
        filed = processor.file(source, made)
        decided = processor.categorise(source, made)
        assert filed.section_id == (decided.section.section_id or None)
        assert filed.section_reason == decided.section.stored()
        assert filed.topics == {t.topic_id: t.as_json_text() for t in decided.topics}, n
        got += len(filed.topics)
    assert got > 300


@pytest.mark.parametrize("hits", [0, 1, 3, STORED_HITS, STORED_HITS + 4])
def test_a_reason_is_stored_as_the_json_text_json_dumps_writes(hits: int) -> None:
    """The reason text built by hand equals json.dumps of the reason, with quotes,
    backslashes, control characters and text beyond ASCII in the words matched."""
    rng = random.Random(hits)
    alphabet = 'aZ"\\\n\t\x00\x1fé€غ😀 '
    found = tuple(
        Hit(rng.choice(["Gaza", 'Pal"estin*', "/ġ\\w+/"]), rng.choice(["title", "summary"]),
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))))
        for _ in range(hits)
    )  # fmt: skip
    for verdict in (
        TopicVerdict("t", True, "keywords", found),
        TopicVerdict("t", True, "keywords", found, more=7),
        TopicVerdict("t", True, "source"),
    ):
        assert verdict.as_json_text() == json.dumps(verdict.as_json())


# -- filters --------------------------------------------------------------------------------


def test_source_filters_drop_entries_and_say_why() -> None:
    rules = EntryFilter(
        include=("Gaza", "Sudan"), exclude=("crossword",), min_words=4, languages=("en",)
    )
    assert rules.rejects(entry("Gaza talks resume in Cairo", language="en-GB")) is None
    assert rules.rejects(entry("Sudan talks resume in Jeddah")) is None  # no language: kept
    assert str(rules.rejects(entry("Gaza talks resume in Cairo", language="fr"))).startswith(
        "languages"
    )
    assert str(rules.rejects(entry("Gaza talks"))) == "min_words: 2 words, fewer than 4"
    assert str(rules.rejects(entry("Gaza crossword number 1,234"))).startswith(
        "exclude: 'crossword'"
    )
    assert str(rules.rejects(entry("Markets rally on Friday again"))).startswith("include")


def test_the_processor_keeps_what_a_source_allows() -> None:
    config = Config(
        sections=(Section("world", "World"),),
        sources=(Source("g", "https://g.example/feed", "world", exclude=("quiz of the week",)),),
    )
    kept = Processor(config).keep(
        "g", [entry("Quiz of the week: 10 questions", key="a"), entry("Floods in Spain", key="b")]
    )
    assert [e.key for e in kept.entries] == ["b"]
    assert [(e.key, r.rule) for e, r in kept.dropped] == [("a", "exclude")]


def test_output_filters_use_sections_topics_sources_and_terms() -> None:
    item = Item(
        id=1,
        source_id="wire",
        entry=entry("Gaza aid convoy reaches Rafah", "Trucks crossed on Tuesday."),
        first_seen_at=NOW,
        last_seen_at=NOW,
        changed_at=NOW,
        section_id="world",
        topics=("palestine",),
    )
    assert ItemFilter(Filter(sections=("world",), topics=("palestine", "syria"))).accepts(item)
    assert not ItemFilter(Filter(sections=("opinion",))).accepts(item)
    assert not ItemFilter(Filter(topics=("climate",))).accepts(item)
    assert not ItemFilter(Filter(sources=("other",))).accepts(item)
    assert not ItemFilter(Filter(exclude=("convoy",))).accepts(item)
    assert ItemFilter(Filter(include=("Rafah",), min_words=5)).accepts(item)


def test_marks_of_other_scripts_stay_and_symbols_separate_words() -> None:
    # a Devanagari vowel sign is part of the word: Hindi and Hindu stay two words
    assert folded_words("हिंदू त्योहार भारत").split() == ["हिंदू", "त्योहार", "भारत"]
    assert matched(["हिंदी"], "हिंदू त्योहार") == []
    assert fold("ガス") != fold("カス")  # a Japanese voicing mark is spelling, not an accent
    assert matched(["Apple"], "Apple™ Watch") == [("Apple", "Apple")]
    # what a hit shows is the original word, even where folding adds or removes words
    assert matched(["Gaza"], "ـ Gaza ™ news") == [("Gaza", "Gaza")]
    assert matched(["Gaza"], "5½ Gaza ـ") == [("Gaza", "Gaza")]


def test_regex_terms_with_backreferences_or_lookarounds_still_match() -> None:
    index = TermIndex([["/(a)b/"], [r"/(x)\1/"], [r"/\d%(?!\s)/"]])
    found = index.scan([Field("title", "the xx files: prices rise 5%"), Field("summary", "x")])
    assert [[h.text for h in hits] for hits in found] == [[], ["xx"], ["5%"]]


@pytest.mark.parametrize(
    ("pattern", "needed"),
    [
        (r"(?<!South )\bSudan(ese)?\b", "sudan"),  # a lookbehind's letters are not needed
        ("(?-i:Turkey)", "turkey"),  # case kept in the term, ignored in the shortcut
        ("colou?r", "colo"),
        ("(foo)+bar", "foo"),  # a group repeated at least once is needed
        ("x{0,3}yyyzz", "yyyzz"),  # one that may be absent is not
        (r"(?:West|East) Bank", " bank"),
        ("K\u212aelvin", "elvin"),  # the Kelvin sign is not ASCII: the run stops there
        ("Gaza(?=n)", "gaza"),
        ("a|b", None),
        ("ab", None),  # too short to be worth a search
        (r"\d+%", None),
    ],
)
def test_a_regex_term_names_the_letters_every_match_holds(pattern: str, needed: str | None) -> None:
    assert required_text(pattern) == needed


def test_regex_terms_skipped_by_their_letters_find_what_searching_every_text_finds() -> None:
    """A text without a regex term's letters is not searched; the hits are those of searching
    every text, on random text around the terms' words (and the Kelvin sign, the long s and
    the dotted and dotless i, which ignoring case they match, and other scripts)."""
    groups = [
        [r"/(?<!South )\bSudan(ese)?\b/", "/(?-i:Turkey)/"],
        ["/colou?rs?/", r"/\bKelvin\b/", "Gaza"],
        [r"/stor(m|k)s?/", r"/\bistanbul\b/"],
    ]
    fast = TermIndex(groups)
    slow = TermIndex(groups)
    slow._needs = None
    slow._regexes = [[(t, r, None) for t, r, _ in g] for g in slow._regexes]
    assert fast._needs == ("sudan", "turkey", "colo", "kelvin", "stor", "istanbul")
    pieces = ["Sudan", "SUDANESE", "South Sudan", "south sudan", "Turkey", "turkey", "TURKEY",
              "colour", "Colors", "\u212aelvin", "kelvin", "ſtorm", "STORK", "stor",
              "Gaza", "İSTANBUL", "ıstanbul", "İstanbul", "غزة"]  # fmt: skip
    rng = random.Random(9)
    searched = 0
    for _ in range(3000):
        words = [rng.choice(pieces + TRICKY) for _ in range(rng.randint(0, 10))]
        fields = [Field("title", " ".join(words)), Field("summary", "".join(words[:3]))]
        expected = [[(h.term, h.field, h.text) for h in found] for found in slow.scan(fields)]
        assert [[(h.term, h.field, h.text) for h in found] for found in fast.scan(fields)] == (
            expected
        ), [f.text for f in fields]
        searched += any(expected[0] + expected[2])
    assert searched > 500


def test_a_fingerprint_does_not_depend_on_what_was_folded_before() -> None:
    item = entry("東京で会議", "長い要約。" * 300 + " Gaza talks resume in Cairo today.")
    plain = fingerprint(item)
    text = ItemText(item)
    _ = text.fields(("summary",))[0].words  # the topic rules folded the whole summary
    assert fingerprint(item, text) == plain


def test_an_index_batch_with_one_id_twice_keeps_one() -> None:
    index = SimilarityIndex(0.5, timedelta(hours=72))
    fp = fingerprint(entry("Gaza talks stall in Cairo", "Officials said talks stalled again."))
    assert fp is not None
    index.add_many([(1, fp, NOW), (1, fp, NOW)])
    assert len(index) == 1
    index.remove([1])
    assert index.similar(fp, NOW) == []


@pytest.mark.parametrize(
    "item",
    [
        entry("Gaza talks", "<p>Officials &amp; envoys met.</p>", content="<p>Full text</p>"),
        entry("Only a title"),
        entry("", "", categories=("World", "Middle East"), publisher=(("section", "World"),)),
        entry("T", "S", publisher=(("tag", "Gaza"), ("odd-kind", "x"), ("breadcrumb", "News"))),
    ],
)
def test_every_field_at_once_is_each_field_asked_for_in_turn(item: Entry) -> None:
    """Filing asks for every field at once (made in one go); it must be what asking for each
    field in turn gives, and what is asked for next must be the fields made then."""
    each = ItemText(item)
    expected = [f for name in ItemText.FIELDS for f in each.fields((name,))]
    at_once = ItemText(item)
    assert at_once.fields() == expected
    assert at_once.fields(("summary", "title")) == each.fields(("summary", "title"))
    assert at_once.fields() == expected  # made already: the fields asked for one by one


def test_an_index_batch_looked_up_again_at_other_times_follows_the_times_given() -> None:
    """The index keeps a batch's times (and keys) for its next calls with the same batch: the
    same fingerprints asked about at other times, or the same times in new tuples, must be
    answered for the times given, not the remembered ones."""
    index = SimilarityIndex(0.5, timedelta(hours=72))
    story = "Officials said the ceasefire talks in Cairo stalled again over the crossings."
    fp = fingerprint(entry("Gaza talks stall in Cairo", story))
    alike = fingerprint(entry("Gaza talks stall in Cairo again", story))
    assert fp is not None and alike is not None
    index.add_many([(1, fp, NOW)])
    assert [m.item_id for m in index.similar_many([alike], [NOW])[0]] == [1]
    far = NOW + timedelta(hours=80)
    assert index.similar_many([alike], [far]) == [[]]
    assert [m.item_id for m in index.similar_many([alike], [NOW + timedelta(hours=1)])[0]] == [1]
    assert index.similar_within([alike, alike], [NOW, far]) == [[], []]
    assert index.similar_within([alike, alike], [NOW, NOW])[1][0][0] == 0
    index.add_many([(2, alike, far)])
    assert [m.item_id for m in index.similar_many([fp], [far])[0]] == [2]


def test_a_one_word_hit_shows_the_word_as_written_by_either_route() -> None:
    """`original` takes a one-word hit from findall in plain ASCII text; it must be what the
    word's place in the text (`_spans`) gives."""
    text = "GAZA: talks in Cairo -- 'Gaza' ceasefire, gaza_strip 2024/25 don't stop. Gaza!"
    samples = [text, text.replace("_", " "), "Ünïcode Gaza café", "“Gaza” — Türkiye’s 5½ ™"]
    rng = random.Random(12)
    pieces = ["Gaza", "école", "Türkiye’s", "5½", "™", "ـ", "e\u0301", "ﬁne", "x_y", "—", ".", " "]
    samples += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    for sample in samples:
        field = Field("content", sample)
        spans = field._spans
        if spans is None:  # cannot be lined up: both routes show the folded words
            assert field.originals is None
            continue
        for k in range(len(field.words)):
            assert field.original(k, k) == sample[spans[k][0] : spans[k][1]], sample
