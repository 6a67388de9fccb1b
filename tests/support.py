"""Helpers shared by tests: parts of the world a test sets by hand."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import feedparser

from aggregator.config import Config
from aggregator.feed.fetch import Fetcher
from aggregator.poll import Poller, PollResult
from aggregator.storage import Storage


@dataclass
class Clock:
    """A clock tests set and advance; storage and services take it as a parameter."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def rss(name: str, count: int, start: int = 0, extra: str = "") -> bytes:
    """An RSS 2.0 document with `count` items numbered from `start`, newest first."""
    items = "".join(
        f"<item><guid>{name}-{n}</guid><title>{name} story {n}</title>"
        f"<link>https://{name}.example/story/{n}</link>"
        f"<description>Body of story {n} {extra}</description>"
        f"<pubDate>{format_datetime(datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=n))}"
        "</pubDate></item>"
        for n in reversed(range(start, start + count))
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>https://{name}.example/</link><description>d</description>{items}</channel></rss>"
    ).encode()


# Markup that must never survive sanitising: script-bearing tags, event handlers, script URLs.
UNSAFE = re.compile(
    r"<\s*(script|style|iframe|frame|object|embed|applet|form|meta|link|base)\b"
    r"|\son\w+\s*="
    r"|(java|vb)script\s*:"
    r"|expression\s*\(",
    re.IGNORECASE,
)


class Harness:
    """A poller over the given config, with a fixed seed and the test clock."""

    def __init__(self, storage: Storage, config: Config, owner: str = "test-worker") -> None:
        self.storage = storage
        self.config = config
        storage.sync_sources(config.sources)
        p = config.polling
        self.fetcher = Fetcher(
            user_agent="test", timeout=p.timeout.total_seconds(), max_bytes=p.max_size, host_gap=0.0
        )
        self.poller = Poller(storage, config, self.fetcher, owner=owner, rng=random.Random(7))

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def poll(self, *ids: str) -> dict[str, PollResult]:
        results = self.poller.run_once(only=list(ids) if ids else None)
        return {r.source_id: r for r in results}

    def close(self) -> None:
        self.poller.close()
        self.fetcher.close()


Build = Callable[[Config], Harness]


def corpus_fragments(corpus: Path, *, titles: bool) -> set[str]:
    """The HTML of every entry in the sample corpus as feedparser reads it unsanitised: its
    summaries and contents, and its titles too if asked (files over 2 MB left out)."""
    fragments: set[str] = set()
    for path in sorted(corpus.rglob("*")):
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        parsed = feedparser.parse(path.read_bytes(), sanitize_html=False)
        for entry in parsed.entries:
            if titles:
                fragments.add(entry.get("title", ""))
            fragments.add(entry.get("summary", ""))
            fragments.update(content.get("value", "") for content in entry.get("content", []))
    fragments.discard("")
    return fragments
