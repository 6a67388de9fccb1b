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


@dataclass(frozen=True)
class Read:
    """An article page read: its main text (None where it has none worth keeping) and what it
    says about itself."""

    html: str | None
    facts: webpage.Facts


def read(body: bytes, url: str, content_type: str | None = None) -> Read:
    """The page parsed once, for its main text and its facts."""
    tree = webpage.parse(body, content_type)
    if tree is None:
        return Read(None, webpage.Facts())
    facts = webpage.facts(tree, url)
    return Read(_main_text(tree, url), facts)


def main_text(body: bytes, url: str, content_type: str | None = None) -> str | None:
    """The article's main text as clean HTML, or None where the page has none worth keeping."""
    return read(body, url, content_type).html


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
    cleaned = clean_html(_body_of(str(found)), url)
    if len(html_to_text(cleaned)) < MIN_TEXT:
        return None
    return cleaned[:MAX_TEXT]


def _body_of(document: str) -> str:
    """trafilatura's HTML output is a whole document: the inside of its <body>."""
    start = document.find("<body>")
    end = document.rfind("</body>")
    return document[start + 6 : end].strip() if start >= 0 and end > start else document
