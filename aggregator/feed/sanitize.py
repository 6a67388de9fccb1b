"""HTML from feeds made safe, with an allow-list sanitiser (nh3, the Rust ammonia; only importer).

Feed HTML is hostile until it passes here: no script, style, iframe, object or form, no event
handlers, no `javascript:` or `data:` URLs. Relative links and images are made absolute against
the entry's base, since what we publish is read far from the page it came from.
"""

from __future__ import annotations

import html
import re
import threading
from urllib.parse import urlsplit

import nh3

from aggregator.feed.urls import join

_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "poster", "longdesc"})
_SCHEMES = frozenset({"http", "https", "mailto"})
_TAGS = frozenset(nh3.ALLOWED_TAGS) | {
    "figure",
    "figcaption",
    "picture",
    "source",
    "audio",
    "video",
    "track",
    "time",
    "mark",
}
_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES.setdefault("img", set()).update({"src", "alt", "title", "width", "height"})
_ATTRIBUTES.setdefault("source", set()).update({"src", "type", "media"})
_ATTRIBUTES.setdefault("audio", set()).update({"src", "controls"})
_ATTRIBUTES.setdefault("video", set()).update({"src", "controls", "poster", "width", "height"})
_ATTRIBUTES.setdefault("track", set()).update({"src", "kind", "srclang", "label"})
_ATTRIBUTES.setdefault("time", set()).add("datetime")
_SPACE = re.compile(r"\s+")


_local = threading.local()


def _absolute(_tag: str, attribute: str, value: str) -> str | None:
    base = getattr(_local, "base", "")
    if attribute in _URL_ATTRIBUTES and base:
        return join(base, value.strip())
    return value


# One cleaner for every call: building one costs more than cleaning a fragment. The base URL of
# the fragment being cleaned reaches the attribute filter through a thread-local, since the filter
# runs synchronously in the calling thread.
_CLEANER = nh3.Cleaner(
    tags=set(_TAGS),
    attributes=_ATTRIBUTES,
    url_schemes=set(_SCHEMES),
    attribute_filter=_absolute,
    link_rel="noopener noreferrer nofollow",
    strip_comments=True,
)


def clean_html(fragment: str, base: str = "") -> str:
    """Safe HTML with absolute URLs; an empty string stays empty."""
    if not fragment or not fragment.strip():
        return ""
    _local.base = base
    try:
        return str(_CLEANER.clean(fragment)).strip()
    finally:
        _local.base = ""


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment (for titles): no tags, entities decoded, spaces folded."""
    if not fragment:
        return ""
    if "<" in fragment:
        fragment = nh3.clean(fragment, tags=set(), clean_content_tags={"script", "style"})
    if "&" in fragment:
        fragment = html.unescape(fragment)
    return " ".join(fragment.split())


def escape(text: str) -> str:
    """Plain text as HTML (a JSON Feed's content_text, say)."""
    return html.escape(text).replace("\n", "<br>\n")


def safe_url(url: str | None) -> str | None:
    """An http(s) address, else None: a link, enclosure or image a reader clicks or loads must
    never be `javascript:` or `data:`."""
    if not url or not url.strip():
        return None
    url = url.strip()
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None
