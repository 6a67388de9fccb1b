"""`join` is urljoin, and `canonical_url` and `safe_url` are what they were, only faster for the
links feeds are full of."""

from __future__ import annotations

import itertools
import random
from urllib.parse import urljoin, urlsplit

from aggregator.feed.sanitize import safe_url
from aggregator.feed.urls import _PLAIN_WEB, _canonical, canonical_url, join

BASES = [
    "http://example.com/feed.xml",
    "https://Example.com:8443/a/b/feed?x=1#top",
    "https://example.com",
    "HTTP://example.com/",
    "http://user@example.com/a/",
    "http://[::1]:8080/feed",
    "file:///etc/feed.xml",
    "",
    "example.com/feed",
]
PIECES = ["/", "a", "b.c", ".", "..", "", "?", "#", "q=1", "&", ";p", "%20", "é", " ", "\t", "//"]
URLS = [
    "/story/1?utm_source=rss",
    "/",
    "/a/b/",
    "/a//b",
    "/a/./b",
    "/a/../b",
    "/.well-known/x",
    "/a;params",
    "/a?",
    "/a#",
    "/a?#f",
    "/a?q#f?g#h",
    "//cdn.example.com/x.png",
    "/a b",
    "/a\tb",
    " /a",
    "http://example.com",
    "https://example.com/a/../b",
    "https://example.com/a?b",
    "https://user@example.com/a",
    "http://example.com:80/a/b;c",
    "https://例え.jp/記事",
    "relative/path",
    "?only=query",
    "#only-fragment",
    "mailto:a@example.com",
    "javascript:alert(1)",
]


def test_join_gives_what_urljoin_gives() -> None:
    for base, url in itertools.product(BASES, URLS):
        assert join(base, url) == urljoin(base, url), (base, url)


def test_join_gives_what_urljoin_gives_on_generated_links() -> None:
    rng = random.Random(14)
    for _ in range(20_000):
        url = rng.choice(["/", "http://h.example", "https://h.example/", ""]) + "".join(
            rng.choice(PIECES) for _ in range(rng.randint(0, 6))
        )
        base = rng.choice(BASES)
        assert join(base, url) == urljoin(base, url), (base, url)


def _safe_url_reference(url: str | None) -> str | None:
    """safe_url as it was written before its shortcut: urlsplit for every URL."""
    if not url or not url.strip():
        return None
    url = url.strip()
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def _generated_urls(count: int) -> list[str]:
    rng = random.Random(15)
    starts = ["http://", "https://", "HTTP://", "hTTps://", "ftp://", "", " https://", "http:"]
    hosts = ["h.example", "H.Example", "h.example.", "h.example:8080", "u:p@h.example", "[::1]",
             "[::1", "h]x", "例え.jp", "", "-h.example", "h..example", "h_x.example"]  # fmt: skip
    pieces = [*PIECES, "utm_source=x", "?id=3&utm_medium=y", "\n", "[", "]", "\x00", "~", "'"]
    return [
        rng.choice(starts)
        + rng.choice(hosts)
        + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        + rng.choice(["", " ", "\t"])
        for _ in range(count)
    ]


def test_canonical_and_safe_urls_take_their_shortcuts_to_the_same_answers() -> None:
    """Most links are plain web URLs, which both take without urlsplit; generated URLs of every
    kind (cases, ports, users, brackets, trackers, spaces, other schemes) get what the whole
    way gives."""
    urls = [*URLS, *_generated_urls(20_000)]
    for url in urls:
        assert canonical_url(url) == _canonical(url), url
        assert safe_url(url) == _safe_url_reference(url), url
    plain = [u for u in urls if _PLAIN_WEB.fullmatch(u.strip())]
    assert len(plain) > 300  # the shortcut was taken
