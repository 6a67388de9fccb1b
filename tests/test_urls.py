"""`join` is urljoin, only faster for the links feeds are full of."""

from __future__ import annotations

import itertools
import random
from urllib.parse import urljoin

from aggregator.feed.urls import join

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
