"""`html_to_text`'s shortcut (stripping plain tags) against parsing, on real and generated HTML."""

from __future__ import annotations

import random

import pytest

from aggregator.feed import sanitize
from aggregator.feed.sanitize import clean_html, html_to_text, parsed_text
from tests.conftest import ROOT
from tests.support import corpus_fragments

CORPUS = ROOT.parent / "shared" / "corpus"

WORDS = ["news", "Gaza", "Türkiye", "غزة", "日本", "a < b", "c > d", "x&y", "5½", "\u00a0", "™"]
ENTITIES = [
    "&amp;",
    "&lt;",
    "&gt;",
    "&nbsp;",
    "&#x27;",
    "&#39;",
    "&copy",
    "&copy;",
    "&unknown;",
    "&#0;",
    "&#150;",
    "&#x1F600;",
    "&ampx",
    "&",
]
CONTROLS = ["\x01", "\r", "\r\n", "\t", "\x0b", "\x0c", "\x7f", "\x85", "\u2028", "\0"]
TAGS = [
    "p",
    "b",
    "i",
    "em",
    "strong",
    "a",
    "span",
    "div",
    "br",
    "img",
    "ul",
    "li",
    "h2",
    "blockquote",
    "figure",
    "figcaption",
    "table",
    "tr",
    "td",
    "script",
    "style",
    "title",
    "textarea",
    "svg",
    "noscript",
    "iframe",
    "pre",
    "code",
    "sup",
    "wbr",
    "hr",
    "font",
]
ATTRIBUTES = [
    'href="https://x.example/a?b=1&amp;c=2"',
    'title="a > b"',
    'alt="<b>not a tag</b>"',
    "class='single'",
    "width=10",
    'data-x=""',
    "hidden",
    'src="/rel/img.png"',
    'style="color: red"',
    'onclick="alert(1)"',
]


def _fragment(rng: random.Random) -> str:
    parts: list[str] = []
    for _ in range(rng.randint(1, 25)):
        roll = rng.random()
        if roll < 0.35:
            parts.append(rng.choice(WORDS) + rng.choice(["", " ", "  ", "\n"]))
        elif roll < 0.45:
            parts.append(rng.choice(ENTITIES))
        elif roll < 0.5:
            parts.append(rng.choice(CONTROLS))
        elif roll < 0.9:
            tag = rng.choice(TAGS)
            attributes = " ".join(rng.sample(ATTRIBUTES, rng.randint(0, 2)))
            closing = rng.random() < 0.4
            parts.append(
                f"</{tag}>"
                if closing
                else f"<{tag}{' ' if attributes else ''}{attributes}{rng.choice(['', '/'])}>"
            )
        else:
            parts.append(
                rng.choice(
                    [
                        "<!-- a comment -->",
                        "<!DOCTYPE html>",
                        "<?pi x?>",
                        "<",
                        "<b",
                        "</",
                        "<3",
                        "<![CDATA[x]]>",
                        ">",
                        '<a\nhref="x">',
                    ]
                )
            )
    return "".join(parts)


def test_generated_markup_reads_the_same_either_way() -> None:
    rng = random.Random(14)
    shortcut = 0
    for _ in range(6000):
        fragment = _fragment(rng)
        for text in (fragment, clean_html(fragment, "https://base.example/")):
            assert html_to_text(text) == parsed_text(text), text
            shortcut += "<" in text and sanitize._strip(text) is not None
    assert shortcut > 3000  # the shortcut is taken, so this compares it, not the parser twice


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} is absent (a clone without ../shared)")
def test_every_corpus_fragment_reads_the_same_either_way() -> None:
    fragments = corpus_fragments(CORPUS, titles=True)
    assert len(fragments) > 600
    shortcut = 0
    for fragment in sorted(fragments):
        for text in (fragment, clean_html(fragment, "https://base.example/")):
            assert html_to_text(text) == parsed_text(text), text
            shortcut += "<" in text and sanitize._strip(text) is not None
    assert shortcut > 700  # of about 930 with markup


def test_a_link_is_made_absolute_against_its_own_entrys_base() -> None:
    """Links made absolute are remembered for a base (an entry's links repeat), never carried
    to another base, and a fragment cleaned without a base keeps its links as written."""
    fragment = '<p><a href="a/b?x=1">one</a> <a href="a/b?x=1">two</a> <img src="/i.png"></p>'
    for _ in range(2):
        first = clean_html(fragment, "https://one.example/news/story")
        assert first.count('href="https://one.example/news/a/b?x=1"') == 2
        assert 'src="https://one.example/i.png"' in first
        second = clean_html(fragment, "https://two.example/")
        assert second.count('href="https://two.example/a/b?x=1"') == 2
        assert 'src="https://two.example/i.png"' in second
        assert 'href="a/b?x=1"' in clean_html(fragment)
    many = "".join(f'<a href="/p{n}">{n}</a>' for n in range(3 * sanitize._JOINED))
    cleaned = clean_html(many, "https://one.example/")
    assert cleaned.count('href="https://one.example/p') == 3 * sanitize._JOINED
    # what one fragment's links filled is let go before the next fragment, same base or not
    clean_html('<a href="/x">x</a>', "https://one.example/")
    assert len(sanitize._local.joined) == 1
