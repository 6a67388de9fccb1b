"""An article page's main text (the only module that imports trafilatura).

trafilatura is the extractor the web-archiving and NLP communities benchmark others against: it
keeps the article's paragraphs, headings, lists, quotes and links and drops navigation, "most
read" boxes, bylines, share bars and footers, on pages it has never seen, with no per-site rules.
It reads lxml trees, so a page is parsed once (by `webpage.parse`) for its text and, later, its
metadata. What it gives is cleaned by the same allow-list sanitiser as any feed HTML.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aggregator.feed import webpage
from aggregator.feed.sanitize import clean_html, html_to_text

MIN_TEXT = 200  # characters: less is a teaser, a paywall or an error page, not an article
MAX_TEXT = 200_000  # characters of article HTML kept (a book-length page keeps its opening)
MAX_BYTES = 2 * 1024 * 1024  # an article page's bytes (with polling.max_size, the smaller)
# Elements of a page trafilatura is given: its time grows faster than the page (1.2 s at 10,000
# elements, 4.8 s at 20,000 on this project's machine); news articles have a few thousand.
MAX_ELEMENTS = 12_000


class TooComplexError(ValueError):
    """A page with more elements than MAX_ELEMENTS: no article is looked for in it."""


@dataclass(frozen=True)
class Read:
    """An article page read: its main text (None where it has none worth keeping) and what it
    says about itself."""

    html: str | None
    facts: webpage.Facts


def read(body: bytes, url: str, content_type: str | None = None) -> Read:
    """The page parsed once, for its main text and its facts. Raises TooComplexError."""
    tree = webpage.parse(body, content_type)
    if tree is None:
        return Read(None, webpage.Facts())
    facts = webpage.facts(tree, url)
    elements = sum(1 for _ in tree.iter())
    if elements > MAX_ELEMENTS:
        raise TooComplexError(
            f"the page is too large to look for an article in ({elements:,} elements; "
            f"at most {MAX_ELEMENTS:,})"
        )
    return Read(_main_text(tree, url), facts)


def _main_text(tree: Any, url: str) -> str | None:
    import trafilatura

    logging.getLogger("trafilatura").setLevel(logging.ERROR)  # it warns of every odd page
    found: Any = trafilatura.extract(
        tree,
        url=url,
        output_format="html",
        include_links=True,
        include_images=False,  # images are the item's own (issue 16); no hotlinked figures
        include_tables=True,
        include_comments=False,
        favor_precision=True,
        deduplicate=False,
    )
    if not found:
        return None
    cleaned = clean_html(_body_of(str(found))[:MAX_TEXT], url)  # cut, then mended by cleaning
    if len(html_to_text(cleaned)) < MIN_TEXT:
        return None
    return cleaned


def _body_of(document: str) -> str:
    """trafilatura's HTML output is a whole document: the inside of its <body>."""
    start = document.find("<body>")
    end = document.rfind("</body>")
    return document[start + 6 : end].strip() if start >= 0 and end > start else document
