"""Checks of the feeds we publish, written from their specifications and kept with the tests, so
the checks run on any clone (no schema from outside the project).

Atom: the structure RFC 4287 requires (its sections 3 and 4), element by element: how many of
each child, required attributes, text, date and person constructs. JSON Feed 1.1: our own JSON
Schema (tests/schemas/jsonfeed-1.1.json), written from the specification.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

ATOM = "{http://www.w3.org/2005/Atom}"
XHTML_DIV = "{http://www.w3.org/1999/xhtml}div"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# RFC 3339 date-time with the upper-case T and Z that RFC 4287 (3.3) requires
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_MEDIA_TYPE = re.compile(r"[^/\s]+/[^/\s]+")

# the Atom children each element may have: name -> (at least, at most); None is no bound
_FEED: dict[str, tuple[int, int | None]] = {
    "author": (0, None),
    "category": (0, None),
    "contributor": (0, None),
    "generator": (0, 1),
    "icon": (0, 1),
    "id": (1, 1),
    "link": (0, None),
    "logo": (0, 1),
    "rights": (0, 1),
    "subtitle": (0, 1),
    "title": (1, 1),
    "updated": (1, 1),
    "entry": (0, None),
}
_ENTRY: dict[str, tuple[int, int | None]] = {
    "author": (0, None),
    "category": (0, None),
    "content": (0, 1),
    "contributor": (0, None),
    "id": (1, 1),
    "link": (0, None),
    "published": (0, 1),
    "rights": (0, 1),
    "source": (0, 1),
    "summary": (0, 1),
    "title": (1, 1),
    "updated": (1, 1),
}
_PERSON: dict[str, tuple[int, int | None]] = {"name": (1, 1), "uri": (0, 1), "email": (0, 1)}
_TEXT = ("title", "subtitle", "summary", "rights")
_DATES = ("updated", "published")


def atom_problems(feed: Any) -> list[str]:
    """What in an Atom feed document breaks RFC 4287; empty when nothing does."""
    problems: list[str] = []
    if feed.tag != f"{ATOM}feed":
        return [f"the root is {feed.tag}, not atom:feed"]
    _children(feed, "feed", _FEED, problems)
    entries = feed.findall(f"{ATOM}entry")
    if feed.find(f"{ATOM}author") is None:
        for n, entry in enumerate(entries):
            if entry.find(f"{ATOM}author") is None:
                problems.append(f"entry {n}: no atom:author, and the feed has none (4.1.1)")
    _alternates(feed, "feed", problems)
    for n, entry in enumerate(entries):
        where = f"entry {n}"
        _children(entry, where, _ENTRY, problems)
        _alternates(entry, where, problems)
        content = entry.find(f"{ATOM}content")
        if content is None and not _alternate_links(entry):
            problems.append(f"{where}: neither atom:content nor an alternate link (4.1.2)")
        if content is not None:
            _content(content, entry, where, problems)
    return problems


def _children(
    node: Any, where: str, allowed: dict[str, tuple[int, int | None]], problems: list[str]
) -> None:
    counts: dict[str, int] = {}
    for child in node:
        if not isinstance(child.tag, str) or not child.tag.startswith(ATOM):
            continue  # comments, and extension elements of other namespaces
        name = child.tag[len(ATOM) :]
        if name not in allowed:
            problems.append(f"{where}: atom:{name} is not allowed here")
            continue
        counts[name] = counts.get(name, 0) + 1
        _element(child, f"{where} atom:{name}", name, problems)
    for name, (least, most) in allowed.items():
        found = counts.get(name, 0)
        if found < least or (most is not None and found > most):
            bound = f"exactly {least}" if least == most else f"at most {most}"
            problems.append(f"{where}: {found} atom:{name}, {bound} allowed")


def _element(node: Any, where: str, name: str, problems: list[str]) -> None:
    text = (node.text or "").strip()
    if name in _DATES and not _DATE.fullmatch(text):
        problems.append(f"{where}: {text!r} is not an RFC 3339 date-time (3.3)")
    elif name == "id" and not _IRI.fullmatch(text):
        problems.append(f"{where}: {text!r} is not an absolute IRI (4.2.6)")
    elif name in _TEXT:
        kind = node.get("type", "text")
        if kind not in ("text", "html", "xhtml"):
            problems.append(f"{where}: type {kind!r} is not text, html or xhtml (3.1.1)")
        elif kind == "xhtml" and [c.tag for c in node] != [XHTML_DIV]:
            problems.append(f"{where}: xhtml text must be one xhtml:div (3.1.1.3)")
        elif kind != "xhtml" and len(node):
            problems.append(f"{where}: {kind} text must not contain elements (3.1.1)")
    elif name in ("author", "contributor"):
        _children(node, where, _PERSON, problems)
    elif name == "link" and not node.get("href"):
        problems.append(f"{where}: no href (4.2.7.1)")
    elif name == "category" and not node.get("term"):
        problems.append(f"{where}: no term (4.2.2.1)")
    elif name in ("icon", "logo") and not text:
        problems.append(f"{where}: empty (4.2.5, 4.2.8)")


def _alternate_links(node: Any) -> list[Any]:
    return [
        link for link in node.findall(f"{ATOM}link") if link.get("rel", "alternate") == "alternate"
    ]


def _alternates(node: Any, where: str, problems: list[str]) -> None:
    seen = [(link.get("type"), link.get("hreflang")) for link in _alternate_links(node)]
    if len(seen) != len(set(seen)):
        problems.append(f"{where}: two alternate links of one type and language (4.1.1)")


def _content(content: Any, entry: Any, where: str, problems: list[str]) -> None:
    kind = content.get("type", "text")
    if kind not in ("text", "html", "xhtml") and not _MEDIA_TYPE.fullmatch(kind):
        problems.append(f"{where}: content type {kind!r} is no media type (4.1.3.1)")
    if content.get("src") is not None:
        if (content.text or "").strip() or len(content):
            problems.append(f"{where}: content with src must be empty (4.1.3.2)")
        if entry.find(f"{ATOM}summary") is None:
            problems.append(f"{where}: content by src needs an atom:summary (4.1.1.2)")
    if kind == "xhtml" and [c.tag for c in content] != [XHTML_DIV]:
        problems.append(f"{where}: xhtml content must be one xhtml:div (4.1.3.3)")


@cache
def json_feed_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / "jsonfeed-1.1.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def json_feed_problems(document: Any) -> list[str]:
    """What in a JSON Feed document breaks version 1.1; empty when nothing does."""
    errors = sorted(json_feed_validator().iter_errors(document), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors]
