"""Reading web pages (the only module that parses HTML into a tree: lxml.html, which lxml,
already a dependency for the fast feed path, brings at no cost; libxml2's HTML parser recovers
from any markup and bounds nesting depth itself; and the only one that imports cssselect and
dateutil).

A source's `url` may be an outlet's page rather than its feed. The page names its feeds in
`<link rel="alternate">` (RSS, Atom, JSON Feed) or `<link rel="feed">`, sometimes only in a
plain `<a href>`; failing those, a site usually answers at one of a few common addresses.

An outlet with no feed at all is read as a page source: CSS selectors an editor writes find each
article on an index page, and its link, title, date and summary in it (`articles`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit

import lxml.html
from lxml import etree

MAX_LINKS = 20  # feed links kept from one page: a page listing a hundred category feeds
# wants its editor to pick one, not a hundred fetches
MAX_ANCHORS = 5_000  # <a> elements looked at (a page is bounded in bytes already)

# The type of a <link rel="alternate"> that names a feed, and what to call it.
_FEED_TYPES = {
    "application/rss+xml": "RSS",
    "application/rdf+xml": "RSS",
    "application/atom+xml": "Atom",
    "application/x.atom+xml": "Atom",
    "application/x-atom+xml": "Atom",
    "application/feed+json": "JSON Feed",
    "application/xml": "feed",
    "text/xml": "feed",
}
# A plain link whose address ends like a feed's ("/feed", "rss.xml", "index.atom", ...).
_FEEDISH = re.compile(
    r"(?:/(?:feed|rss|atom)/?|[./_-](?:rss|atom|rdf)|[/_-](?:feed|rss|atom|index)\.(?:xml|json))$",
    re.I,
)
# Where sites commonly serve a feed when their pages do not say (WordPress, Ghost, Hugo,
# Jekyll and static generators, in rough order of how common they are).
COMMON_PATHS = ("/feed", "/rss", "/rss.xml", "/feed.xml", "/atom.xml", "/index.xml")

_HTML_TAG = re.compile(rb"<(?:!doctype\s+html|html)\b", re.I)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.I)


@dataclass(frozen=True)
class FeedLink:
    """A feed a page points to: its address, what kind it says it is, and how it was found."""

    url: str
    kind: str  # "RSS", "Atom", "JSON Feed", or "feed" where the page does not say
    title: str = ""
    found: str = "link"  # "link": <link rel=alternate|feed>; "anchor": an <a href>; "guess"


def looks_like_html(body: bytes, content_type: str | None) -> bool:
    """Whether a document that is no feed is a web page (and so may name its feed)."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        return True
    return _HTML_TAG.match(_past_prologue(body[:4096])) is not None


def _past_prologue(head: bytes) -> bytes:
    """A document's start past its byte-order mark, XML declaration and comments, skipped by
    hand: a regex that repeats `<!--.*?-->` backtracked exponentially on a run of comments."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<?xml"):
        end = text.find(b"?>")
        text = text[end + 2 :].lstrip() if end >= 0 else b""
    while text.startswith(b"<!--"):
        end = text.find(b"-->", 4)
        text = text[end + 3 :].lstrip() if end >= 0 else b""
    return text


def _encoding(body: bytes, content_type: str | None) -> str:
    """The page's character encoding: the header's, the page's own <meta>, else UTF-8 where the
    bytes are valid UTF-8 and windows-1252 where not (what browsers fall back to)."""
    declared = _CHARSET.search(content_type or "") or _META_CHARSET.search(body[:4096])
    if declared:
        name = declared.group(1)
        name = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            return "utf-8" if name.lower() in ("utf8", "unicode") else _known(name)
        except LookupError:
            pass
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "windows-1252"
    return "utf-8"


def _known(name: str) -> str:
    import codecs

    return codecs.lookup(name).name


def parse(body: bytes, content_type: str | None = None) -> etree._Element | None:
    """The page as an lxml tree, or None where there is nothing to read."""
    options = {
        "remove_comments": True,
        "remove_pis": True,
        "no_network": True,
        "huge_tree": False,  # libxml2's own bounds on depth and text size stay on
    }
    try:
        parser = lxml.html.HTMLParser(encoding=_encoding(body, content_type), **options)
    except LookupError:  # a codec Python knows and libxml2 does not (base64, rot13, idna...)
        parser = lxml.html.HTMLParser(encoding="windows-1252", **options)
    try:
        root = etree.fromstring(body, parser)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError, LookupError):
        return None
    return root


def _base(root: etree._Element, url: str) -> str:
    """What relative addresses resolve against: <base href> where the page gives one."""
    for base in root.iter("base"):
        href = str(base.get("href") or "").strip()
        if href:
            try:
                joined = urljoin(url, href)
                if urlsplit(joined).scheme in ("http", "https"):
                    return joined
            except ValueError:  # "http://[bad": no base at all
                pass
        break
    return url


def _absolute(base: str, href: str | None) -> str | None:
    href = (href or "").strip()
    if not href or href.startswith("#"):
        return None
    try:
        joined = urljoin(base, href)
        parts = urlsplit(joined)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return urlunsplit(parts._replace(fragment=""))


def _text(value: str | None) -> str:
    return " ".join((value or "").split())[:200]


def feed_links(body: bytes, url: str, content_type: str | None = None) -> list[FeedLink]:
    """The feeds a page names, in the page's order (publishers list their main feed first):
    `<link rel="alternate">` of a feed type and `<link rel="feed">`, then plain links whose
    address looks like a feed's. At most MAX_LINKS, each address once."""
    root = parse(body, content_type)
    if root is None:
        return []
    base = _base(root, url)
    found: dict[str, FeedLink] = {}
    for link in root.iter("link"):
        rel = (link.get("rel") or "").lower().split()
        kind_of = (link.get("type") or "").split(";", 1)[0].strip().lower()
        href = _absolute(base, link.get("href"))
        if href is None:
            continue
        if "alternate" in rel and kind_of in _FEED_TYPES:
            kind = _FEED_TYPES[kind_of]
        elif "alternate" in rel and kind_of == "application/json" and "feed" in href.lower():
            kind = "JSON Feed"  # JSON Feed 1.0's type; WordPress's REST API links are not feeds
        elif "feed" in rel:
            kind = _FEED_TYPES.get(kind_of, "feed")
        else:
            continue
        if href not in found:
            found[href] = FeedLink(href, kind, _text(link.get("title")), "link")
    for count, anchor in enumerate(root.iter("a")):
        if count >= MAX_ANCHORS or len(found) >= MAX_LINKS:
            break
        href = _absolute(base, anchor.get("href"))
        if href is None or href in found or not _FEEDISH.search(urlsplit(href).path):
            continue
        title = _text(anchor.get("title") or anchor.text_content())
        found[href] = FeedLink(href, _kind_by_address(href), title, "anchor")
    return list(found.values())[:MAX_LINKS]


def _kind_by_address(url: str) -> str:
    path = urlsplit(url).path.lower()
    if "atom" in path:
        return "Atom"
    if path.endswith(".json"):
        return "JSON Feed"
    if "rss" in path or path.endswith(".rdf"):
        return "RSS"
    return "feed"


def common_addresses(url: str) -> list[FeedLink]:
    """COMMON_PATHS on the page's site, for a page that names no feed."""
    parts = urlsplit(url)
    return [
        FeedLink(urlunsplit((parts.scheme, parts.netloc, path, "", "")), "feed", "", "guess")
        for path in COMMON_PATHS
    ]


# -- page sources: articles found by CSS selectors --------------------------------------------

MAX_ARTICLES = 1_000  # items taken from one page (polling.max_entries caps them again)


class PageRules(Protocol):
    """The selectors of a page source (config.schema.PageRules)."""

    @property
    def items(self) -> str: ...
    @property
    def link(self) -> str | None: ...
    @property
    def title(self) -> str | None: ...
    @property
    def date(self) -> str | None: ...
    @property
    def summary(self) -> str | None: ...


@dataclass(frozen=True)
class Article:
    """One article as the selectors found it on the page."""

    link: str
    title: str
    summary_html: str = ""
    published: datetime | None = None
    date_text: str = ""  # what the date selector found, as written (for the preview)


@dataclass(frozen=True)
class Page:
    """A page source's page: its title and language, and the articles on it."""

    title: str
    language: str | None
    articles: tuple[Article, ...]
    notes: tuple[str, ...] = ()


def selector_problem(text: str) -> str | None:
    """Why a CSS selector cannot be used, in words; None if it compiles."""
    from cssselect import SelectorError

    try:
        _compiled(text)(_PROBE)  # run once: a namespace (`ns|a`) compiles, then fails to run
    except SelectorError as exc:
        return f"`{text}` is not a CSS selector this reader understands ({exc})"
    except etree.XPathError as exc:
        return f"`{text}` cannot be used on a web page ({exc}); namespaces are not"
    return None


_PROBE = lxml.html.fromstring("<html><body><p>probe</p></body></html>")


@lru_cache(maxsize=256)
def _compiled(text: str) -> Callable[[Any], list[Any]]:
    from lxml.cssselect import CSSSelector

    return CSSSelector(text, translator="html")  # type: ignore[no-any-return]


def _first(element: Any, selector: str | None) -> Any | None:
    if not selector:
        return None
    found = _select(element, selector)
    return found[0] if found else None


def _select(element: Any, selector: str) -> list[Any]:
    try:
        return list(_compiled(selector)(element))
    except etree.XPathError:  # checked when the config loaded; never a poll's failure
        return []


def _link_of(item: Any, rules: PageRules) -> Any | None:
    """The article's link element: the selector's match (or an <a href> inside it), else the
    item itself when it is a link, else the first <a href> in it."""
    chosen = _first(item, rules.link) if rules.link else item
    if chosen is None:
        return None
    if chosen.tag == "a" and chosen.get("href"):
        return chosen
    inner = _first(chosen, "a[href]")
    return inner


def _words(element: Any) -> str:
    return " ".join(str(element.text_content()).split()) if element is not None else ""


def _inner_html(element: Any) -> str:
    parts = [element.text or ""] if element.text else []
    parts += [lxml.html.tostring(child, encoding="unicode") for child in element]
    return "".join(parts).strip()


# a date as people write it: "2026-11-29", "29/11/2026", "Nov 29", "29 November 2026"
_WRITTEN_DATE = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}"
    r"|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}\b"
    r"|\b\d{1,2}\s+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
    re.I,
)


def page_date(element: Any, now: datetime) -> tuple[datetime | None, str]:
    """A date as a page writes it: a `datetime` or `content` attribute (ISO 8601), else text
    with a day and a month in it ("29 Nov 2026, 14:05", "November 29"; the year is the latest
    not in the future where none is written); a time with no zone is UTC. None where there is
    no such date ("2 hours ago" is none: the item then dates from when it is first seen)."""
    from dateutil import parser

    if element is None:
        return None, ""
    written = str(element.get("datetime") or element.get("content") or "").strip()
    text = written or _words(element)
    if not text:
        return None, ""
    if not written and not _WRITTEN_DATE.search(text):
        return None, text[:100]
    default = datetime(now.year, 1, 1)
    try:
        moment = parser.parse(text, fuzzy=not written, default=default)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        if not written and str(moment.year) not in text and moment > now + timedelta(days=1):
            moment = moment.replace(year=moment.year - 1)  # "Dec 30" read on January 2
    except (ValueError, OverflowError):  # no such date, or no such offset ("+99:00")
        return None, text[:100]
    return moment, text[:100]


def articles(
    body: bytes, url: str, rules: PageRules, now: datetime, content_type: str | None = None
) -> Page:
    """The articles a page source's selectors find on a page, in page order, each link once."""
    root = parse(body, content_type)
    if root is None:
        return Page("", None, ())
    base = _base(root, url)
    title = _words(_first(root, "title"))
    language = (root.get("lang") or "").strip() or None
    found: dict[str, Article] = {}
    notes: list[str] = []
    items = _select(root, rules.items)
    unlinked = 0
    for item in items[:MAX_ARTICLES]:
        link = _link_of(item, rules)
        href = _absolute(base, link.get("href")) if link is not None else None
        if href is None:
            unlinked += 1
            continue
        if href in found:
            continue
        headline = _words(_first(item, rules.title)) if rules.title else _words(link)
        summary = _first(item, rules.summary)
        published, written = page_date(_first(item, rules.date), now)
        found[href] = Article(
            href,
            headline or _words(link),
            _inner_html(summary) if summary is not None else "",
            published,
            written,
        )
    if len(items) > MAX_ARTICLES:
        notes.append(f"{len(items):,} items matched; the first {MAX_ARTICLES:,} were read")
    if unlinked:
        notes.append(f"{unlinked} of {len(items)} items had no link and were left out")
    return Page(title, language, tuple(found.values()), tuple(notes))


# -- an article page: the publisher's own filing, dates, canonical address, language ----------

MAX_JSON_LD = 256 * 1024  # characters of one JSON-LD block read (a page's are a few KB)
MAX_TERMS = 40  # publisher terms kept from one page
MAX_TERM = 100  # characters of one
_ARTICLE_TYPES = ("Article", "NewsArticle", "BlogPosting", "Report")  # and their kinds
_HOME = {"home", "inicio", "accueil", "portada", "startseite", "الرئيسية", "início", "main"}
_BREADCRUMBS = (
    "[itemtype$='BreadcrumbList'], nav[aria-label*='readcrumb' i], .breadcrumb, .breadcrumbs, "
    "#breadcrumb, #breadcrumbs, [class*='breadcrumb']"
)
_LABELS = ".label, .kicker, .eyebrow, .article-label, .section-label, .category-label, .overline"


@dataclass(frozen=True)
class Facts:
    """What an article page says about itself, beyond its text."""

    publisher: tuple[tuple[str, str], ...] = ()  # (kind, term): breadcrumb, section, keyword...
    published: datetime | None = None
    modified: datetime | None = None
    canonical: str | None = None
    language: str | None = None
    image: str | None = None  # og:image / twitter:image


def facts(root: Any, url: str) -> Facts:
    """The publisher's own filing (BreadcrumbList and the article's `articleSection` and
    `keywords` in JSON-LD, `article:section` and `article:tag` meta, the page's breadcrumb trail
    and labels), its dates, canonical address and language."""
    base = _base(root, url)
    objects = _json_ld(root)
    terms: list[tuple[str, str]] = []
    article = next((o for o in objects if _is_type(o, _ARTICLE_TYPES)), {})
    crumbs = [o for o in objects if _is_type(o, ("BreadcrumbList",))]
    for crumb in crumbs[:1]:
        elements = crumb.get("itemListElement")
        listed = elements if isinstance(elements, list) else []
        ordered = sorted(
            (e for e in listed if isinstance(e, dict)), key=lambda e: _number(e.get("position"))
        )
        terms += [("breadcrumb", name) for e in ordered if (name := _crumb_name(e))]
    if not crumbs:
        terms += [("breadcrumb", name) for name in _trail(root)]
    terms += [("section", s) for s in _strings(article.get("articleSection"))]
    for value in _strings(article.get("keywords")):
        terms += [("keyword", k.strip()) for k in value.split(",")]
    for meta in root.iter("meta"):
        kind = str(meta.get("property") or meta.get("name") or "").lower()
        content = str(meta.get("content") or "")
        if kind == "article:section":
            terms.append(("section", content))
        elif kind == "article:tag":
            terms.append(("tag", content))
        elif kind == "news_keywords":
            terms += [("keyword", k.strip()) for k in content.split(",")]
    for label in _select(root, _LABELS)[:5]:
        terms.append(("label", _words(label)))
    headline = _words(_first(root, "h1")).casefold()
    kept: dict[tuple[str, str], None] = {}
    for kind, term in terms:
        term = " ".join(term.split())
        folded = term.casefold()
        if 0 < len(term) <= MAX_TERM and folded not in _HOME and folded != headline:
            kept.setdefault((kind, term), None)
    return Facts(
        publisher=tuple(kept)[:MAX_TERMS],
        published=_iso(article.get("datePublished")) or _meta_time(root, "published_time"),
        modified=_iso(article.get("dateModified")) or _meta_time(root, "modified_time"),
        canonical=_canonical(root, base),
        language=_language_of(root, article),
        image=_image(root, base),
    )


def _image(root: Any, base: str) -> str | None:
    """The picture the page shares itself with (Open Graph, else Twitter's card)."""
    for wanted in ("og:image", "og:image:url", "og:image:secure_url", "twitter:image"):
        for meta in root.iter("meta"):
            if str(meta.get("property") or meta.get("name") or "").lower() == wanted:
                found = _absolute(base, meta.get("content"))
                if found and len(found) <= 4_000:
                    return found
    return None


def _json_ld(root: Any) -> list[dict[str, Any]]:
    """Every JSON-LD object of the page, @graph lists opened (one level of nesting)."""
    import json

    found: list[dict[str, Any]] = []
    for script in root.iter("script"):
        if str(script.get("type") or "").strip().lower() != "application/ld+json":
            continue
        text = (script.text or "").strip()
        if not text or len(text) > MAX_JSON_LD:
            continue
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            continue
        for value in data if isinstance(data, list) else [data]:
            if isinstance(value, dict):
                graph = value.get("@graph")
                found.append(value)
                found += (
                    [g for g in graph if isinstance(g, dict)] if isinstance(graph, list) else []
                )
    return found


def _is_type(value: dict[str, Any], names: tuple[str, ...]) -> bool:
    kinds = value.get("@type")
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if isinstance(kind, str) and any(kind.endswith(name) for name in names):
            return True
    return False


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return float("inf")


def _crumb_name(element: dict[str, Any]) -> str:
    name = element.get("name")
    item = element.get("item")
    if not isinstance(name, str) and isinstance(item, dict):
        name = item.get("name")
    return " ".join(name.split()) if isinstance(name, str) else ""


def _trail(root: Any) -> list[str]:
    """The names of a breadcrumb trail written in the page's HTML: its list items or links."""
    trail = _first(root, _BREADCRUMBS)
    if trail is None:
        return []
    parts = trail.findall(".//li") or trail.findall(".//a")
    names = [_words(part) for part in parts]
    last = trail.xpath("string(./*[last()])") if parts and trail.findall(".//a") else ""
    if last and last.strip() not in names and not trail.findall(".//li"):
        names.append(" ".join(str(last).split()))
    return [n for n in names if n]


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _meta_time(root: Any, name: str) -> datetime | None:
    for meta in root.iter("meta"):
        if str(meta.get("property") or meta.get("name") or "").lower() == f"article:{name}":
            return _iso(meta.get("content"))
    return None


def _canonical(root: Any, base: str) -> str | None:
    for link in root.iter("link"):
        if "canonical" in str(link.get("rel") or "").lower().split():
            return _absolute(base, link.get("href"))
    return None


def _language_of(root: Any, article: dict[str, Any]) -> str | None:
    declared = article.get("inLanguage")
    text = declared if isinstance(declared, str) else root.get("lang")
    text = str(text or "").strip()
    return text if re.fullmatch(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*", text) else None
