"""`clean_html`'s fast path (C, for HTML a parser reads as written) against nh3, on generated
and real HTML: wherever the fast path answers, it answers what nh3 writes."""

from __future__ import annotations

import random

import pytest

from aggregator import speedups
from aggregator.feed import sanitize
from aggregator.feed.sanitize import clean_html, clean_html_parsed
from tests.conftest import ROOT
from tests.support import corpus_fragments

CORPUS = ROOT.parent / "shared" / "corpus"
BASES = ("https://base.example/news/", "")

pytestmark = pytest.mark.skipif(speedups.native is None, reason="the C module was not built")

TAGS = [
    "p", "b", "i", "em", "strong", "a", "span", "div", "br", "img", "ul", "ol", "li", "h2", "h3",
    "blockquote", "figure", "figcaption", "script", "style", "code", "sup", "sub", "wbr", "hr",
    "font", "big", "section", "main", "address", "dl", "dt", "dd", "center", "video", "audio",
    "source", "track", "picture", "time", "abbr", "q", "cite", "del", "ins", "small", "mark",
    "table", "pre", "title", "nobr", "button", "area", "details", "summary", "nav", "header",
]  # fmt: skip
VOID = {"br", "img", "wbr", "hr", "source", "track", "area"}
TEXT = [
    "news", "Gaza", "Türkiye", "غزة", "日本", "a < b", "c > d", "x&y", "5½", "\u00a0", "™", '"q"',
    "'s'", "&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&nbsp;", "&#8217;", "&#x2019;",
    "&hellip;", "&copy;", "&#0;", "&#150;", "&#x1F600;", "&unknown;", "&copy", " ", "\n", "\t",
    "<3", "a <", "\u2028", "&#9;", "&#10;", "&#65;", "&#xD800;", "&#xFFFE;", "&mdash;",
    "&eacute;", "\r\n", "\x0b", "\x85", "\0", "<!-- c -->", "<!---->", "<!-->", "<!--->",
    "<!-- a -- b -->", "<!-- x --!> y -->", "<!-- <!-- -->", "<!--- x --->", "<!-- x",
]  # fmt: skip
LINKS = [
    "/rel/img.png", "a/b?x=1&amp;y=2", "https://x.example/a", "http://999.1.1.1/",
    "http://a:99999/", "javascript:alert(1)", "mailto:x@y", "//cdn.x/y", "", " /x ",
    "HTTP://X/Y", "https://x.example:8080/p#f", "https://[::1]/", "https://ex.org./a",
    "https://a b/", "/a b.png", "https://ex.org/ü", "data:x", "?q=1", "#frag",
    "https://user@x.org/", "https://x.1/", "https://x.org:0/", "https://x.org:/", "JaVaScRiPt:x",
]  # fmt: skip
ATTRIBUTES = [
    "href", "src", "title", "alt", "lang", "class", "style", "onclick", "width", "height", "rel",
    "hreflang", "cite", "poster", "controls", "datetime", "data-x", "HREF", "Title", "dir",
]  # fmt: skip
VALUES = ["x", "a > b", "<b>", "a&amp;b", 'a"b', "a'b", "", "\u00a0", "&nbsp;", "é", "a & b"]


def _attribute(rng: random.Random) -> str:
    name = rng.choice(ATTRIBUTES)
    links = name.lower() in ("href", "src", "cite", "poster")
    value = rng.choice(LINKS if links else VALUES)
    roll = rng.random()
    if roll < 0.7:
        return f'{name}="{value}"' if '"' not in value else f"{name}='{value}'"
    if roll < 0.8:
        return f"{name}='{value}'" if "'" not in value else f'{name}="{value}"'
    if roll < 0.9 and value and not any(c in value for c in " \"'<=`>\t\n"):
        return f"{name}={value}"
    return name if roll < 0.95 else f'{name} = "{value}"'


def _markup(rng: random.Random, depth: int = 0) -> str:
    """Mostly well nested markup (what the fast path takes), with the odd element left open,
    known tags the tree builder moves or closes, and every kind of value and entity."""
    parts: list[str] = []
    for _ in range(rng.randint(0, 4 if depth < 4 else 1)):
        if rng.random() < 0.45:
            parts.append("".join(rng.choice(TEXT) for _ in range(rng.randint(1, 4))))
            continue
        tag = rng.choice(TAGS)
        attributes = [_attribute(rng) for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))]
        name = tag.upper() if rng.random() < 0.05 else tag
        space = rng.choice([" ", " ", "\n", "  "])
        opening = (
            f"<{name}{space if attributes else ''}{space.join(attributes)}"
            f"{rng.choice(['', '', ' ', '/'])}>"
        )
        if tag in VOID:
            parts.append(opening)
        elif tag in ("script", "style"):
            text = rng.choice(["t()", "a<b", "x</scr", "<!-- x -->", "p{}", ""])
            parts.append(f"{opening}{text}</{name}{rng.choice(['', ' '])}>")
        else:
            closing = f"</{name}>" if rng.random() < 0.97 else ""
            parts.append(opening + _markup(rng, depth + 1) + closing)
    return "".join(parts)


def _fast(fragment: str, base: str) -> str | None:
    assert speedups.native is not None
    sanitize._use_base(base)
    found: str | None = speedups.native.clean_simple(
        fragment,
        sanitize._KEPT,
        sanitize._GENERIC,
        sanitize._URL_ATTRIBUTES,
        sanitize._joined,
        sanitize._LINK_REL,
    )
    return found


def test_generated_markup_is_cleaned_as_nh3_cleans_it() -> None:
    rng = random.Random(7)
    taken = 0
    for _ in range(8000):
        fragment = _markup(rng)
        for base in BASES:
            assert clean_html(fragment, base) == clean_html_parsed(fragment, base), fragment
            taken += _fast(fragment, base) is not None
    assert taken > 4000  # the fast path answers, so this compares it, not nh3 twice


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} is absent (a clone without ../shared)")
def test_every_corpus_fragment_is_cleaned_as_nh3_cleans_it() -> None:
    fragments = corpus_fragments(CORPUS, titles=False)
    assert len(fragments) > 500
    taken = 0
    for fragment in sorted(fragments):
        for base in BASES:
            assert clean_html(fragment, base) == clean_html_parsed(fragment, base), fragment
            taken += _fast(fragment, base) is not None
    assert taken > 0.7 * 2 * len(fragments)  # 467 of 572 when written


@pytest.mark.parametrize(
    ("fragment", "cleaned"),
    [
        (
            '<p>x <a rel="x" href="/s?u=1&amp;v=2" title="t">m</a></p>',
            '<p>x <a href="https://base.example/s?u=1&amp;v=2" title="t" '
            'rel="noopener noreferrer nofollow">m</a></p>',
        ),
        ('<img src="/i.png" onerror="x()"/>', '<img src="https://base.example/i.png">'),
        ("<p>a<script>t()</script>b<style>p{}</style></p>", "<p>ab</p>"),
        (
            "<section><P lang=en CLASS=x>a&nbsp;&#8217;\u00a0</P></section>",
            '<p lang="en">a&nbsp;’&nbsp;</p>',
        ),
        (
            "<video controls poster='/p.jpg'></video>",
            '<video controls="" poster="https://base.example/p.jpg"></video>',
        ),
    ],
)
def test_the_fast_path_writes_what_nh3_writes(fragment: str, cleaned: str) -> None:
    assert _fast(fragment, "https://base.example/news/") is not None
    assert clean_html(fragment, "https://base.example/news/") == cleaned
    assert clean_html_parsed(fragment, "https://base.example/news/") == cleaned


@pytest.mark.parametrize(
    "fragment",
    [
        '<a href="javascript:alert(1)">x</a>',  # ammonia drops the link
        '<a href="http://999.1.1.1/">x</a>',  # not a host a URL parser takes
        "<p>a<p>b</p></p>",  # the second p closes the first
        "<p>a<div>b</div></p>",  # so does a div
        "<b>a<i>b</b></i>",  # misnested: the adoption agency moves things
        "<p>open",  # closed by the parser at the end
        "<table><tr><td>x</td></tr></table>",  # text and rows are fostered
        "<!--><p>x</p>",  # a comment the tokenizer ends at once
        "<!-- a --!> b -->",
        "<p>a\r\nb</p>",  # newlines normalised
        "<p>&copy</p>",  # a reference without its semicolon
        '<img src="x" src="y">',  # a repeated attribute
        "<script>a<!--b</script>-->c</script>",
        "<o:p>word</o:p>",
        "<span/>x",  # the slash is ignored: the span stays open
        "<p>\0</p>",
    ],
)
def test_anything_a_parser_would_change_goes_to_nh3(fragment: str) -> None:
    assert _fast(fragment, "https://base.example/") is None
    assert clean_html(fragment, "https://base.example/") == clean_html_parsed(
        fragment, "https://base.example/"
    )


def test_deep_and_wide_markup_goes_to_nh3_without_harm() -> None:
    deep = "<span>" * 200 + "x" + "</span>" * 200  # deeper than the fast path keeps count of
    wide = "<img " + " ".join(f'a{n}="{n}"' for n in range(40)) + ">"
    for fragment in (deep, wide):
        assert _fast(fragment, "") is None
        assert clean_html(fragment) == clean_html_parsed(fragment)
