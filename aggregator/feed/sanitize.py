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

from aggregator import speedups
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
_JOINED = 1000  # links remembered for one base, at most


def _absolute(_tag: str, attribute: str, value: str) -> str:
    if attribute not in _URL_ATTRIBUTES:  # half the calls: the rel nh3 gives every link
        return value
    base: str = _local.base
    if not base:
        return value
    # An entry's links repeat (its story's address after each paragraph, in the summary and
    # in the content): each is made absolute once for the entry's base.
    joined: dict[str, str] = _local.joined
    found = joined.get(value)
    if found is None:
        found = joined[value] = join(base, value.strip())
    return found


_LINK_REL = "noopener noreferrer nofollow"
# One cleaner for every call: building one costs more than cleaning a fragment. The base URL of
# the fragment being cleaned reaches the attribute filter through a thread-local, since the filter
# runs synchronously in the calling thread.
_CLEANER = nh3.Cleaner(
    tags=set(_TAGS),
    attributes=_ATTRIBUTES,
    url_schemes=set(_SCHEMES),
    attribute_filter=_absolute,
    link_rel=_LINK_REL,
    strip_comments=True,
)


# What the fast path (`_speedups.clean_simple`) needs of the cleaner above: the tags it keeps
# with their attributes, the attributes ammonia allows on every tag (its default, which nh3
# keeps: the tests hold the two paths equal), and the attributes whose links are joined.
_KEPT = {tag: frozenset(_ATTRIBUTES.get(tag, ())) for tag in _TAGS}
_GENERIC = frozenset({"lang", "title"})


def _joined(value: str) -> str:
    return _absolute("", "href", value)


def _use_base(base: str) -> None:
    """The filter reads the base (and the links joined for it) from here: it runs in this
    thread, called by nh3 or by the fast path."""
    if base != getattr(_local, "base", None) or len(_local.joined) > _JOINED:
        _local.base, _local.joined = base, {}


def clean_html(fragment: str, base: str = "") -> str:
    """Safe HTML with absolute URLs; an empty string stays empty.

    Most feed HTML is what a parser reads as written (known tags, closed in order, plain
    entities): C writes what nh3 writes for it in one pass, at a fraction of nh3's cost (parsing
    into a tree and serialising it was a fifth of a helper's work); nh3 cleans everything else.
    """
    if not fragment or not fragment.strip():
        return ""
    _use_base(base)
    if speedups.native is not None:
        fast: str | None = speedups.native.clean_simple(
            fragment, _KEPT, _GENERIC, _URL_ATTRIBUTES, _joined, _LINK_REL
        )
        if fast is not None:
            return fast.strip()
    return str(_CLEANER.clean(fragment)).strip()


def clean_html_parsed(fragment: str, base: str = "") -> str:
    """`clean_html` by nh3, always (the reference the fast path is held to)."""
    if not fragment or not fragment.strip():
        return ""
    _use_base(base)
    return str(_CLEANER.clean(fragment)).strip()


# A tag as html5ever writes one (and as most feeds do): a name, attributes with double-quoted
# values or none. Only such tags are stripped by `_strip`; anything else goes to the parser.
_TAG = re.compile(r'</?[A-Za-z][A-Za-z0-9]*(?:\s+[^\s"\'<>/=]+(?:="[^"]*")?)*\s*/?>')
# Where removing tags is not what an HTML parser does: a NUL (which parsers drop), elements whose
# content is not markup or whose text the parser moves (raw text, foreign content, tables, whose
# stray text is fostered out before them, the newline that opens a pre), and markup left once
# the plain tags are gone (a comment, a doctype, a processing instruction, a tag written
# otherwise).
_SPECIAL = frozenset(
    [
        "script",
        "style",
        "title",
        "textarea",
        "xmp",
        "iframe",
        "noembed",
        "noframes",
        "noscript",
        "plaintext",
        "template",
        "svg",
        "math",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "td",
        "th",
        "caption",
        "colgroup",
        "col",
        "select",
        "frameset",
        "head",
        "html",
        "body",
        "image",
        "pre",
        "listing",
    ]
)
# the same names for the C `strip_tags` (which reads tag names of up to 16 letters)
_SPECIAL_NAMES = speedups.native.WordSet(sorted(_SPECIAL)) if speedups.native else None
assert all(len(name) <= 16 for name in _SPECIAL)
_NAME = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)")
_MARKUP = re.compile(r"<[A-Za-z/!?]")


def _strip(fragment: str) -> str | None:
    """The fragment without its tags, or None where only a parser can say what the text is."""
    if speedups.native is not None:
        stripped: str | None = speedups.native.strip_tags(fragment, _SPECIAL_NAMES)
        return stripped
    if "\0" in fragment or any(name.lower() in _SPECIAL for name in _NAME.findall(fragment)):
        return None
    stripped = _TAG.sub("", fragment)
    return None if _MARKUP.search(stripped) else stripped


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment: no tags, entities decoded, spaces folded.

    Most fragments (all that `clean_html` writes, most that feeds send) are plain tags around
    text, which a regular expression strips as html5ever would, several times faster than
    parsing them; the rest are parsed. A test holds the two equal on the corpus and on
    generated markup.
    """
    if not fragment:
        return ""
    stripped = _strip(fragment) if "<" in fragment else fragment
    return _text(_parsed(fragment) if stripped is None else stripped)


def parsed_text(fragment: str) -> str:
    """`html_to_text` by parsing, always (the reference the shortcut is held to)."""
    return _text(_parsed(fragment) if "<" in fragment else fragment)


def _parsed(fragment: str) -> str:
    return nh3.clean(fragment, tags=set(), clean_content_tags={"script", "style"})


def _text(fragment: str) -> str:
    if "&" in fragment:
        fragment = html.unescape(fragment)
    if speedups.native is not None:
        collapsed: str = speedups.native.collapse_spaces(fragment)
        return collapsed
    return " ".join(fragment.split())


def escape(text: str) -> str:
    """Plain text as HTML (a JSON Feed's content_text, say)."""
    return html.escape(text).replace("\n", "<br>\n")


_BRACKET = re.compile(r"[\[\]]")  # urlsplit refuses a URL with one in its host


def safe_url(url: str | None) -> str | None:
    """An http(s) address, else None: a link, enclosure or image a reader clicks or loads must
    never be `javascript:` or `data:`."""
    if not url or not url.strip():
        return None
    url = url.strip()
    if url.startswith(("http://", "https://")) and url.isascii() and not _BRACKET.search(url):
        return url  # urlsplit takes such a URL as written: its scheme is this one (tests)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None
