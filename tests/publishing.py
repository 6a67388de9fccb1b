"""A small newsroom for publishing tests: a config with outputs, and items stored the real way."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from aggregator.config import (
    Config,
    Filter,
    Output,
    Publishing,
    Section,
    Server,
    Source,
    Topic,
)
from aggregator.process.pipeline import Processor
from aggregator.storage import Storage
from aggregator.types import Enclosure, Entry, SaveReport
from aggregator.web import WebServer

BASE = "http://news.test/"
START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
WIRE = (
    "Indirect talks between Israel and Hamas on the next phase of the Gaza ceasefire stalled "
    "on Wednesday over the mandate of a proposed international stabilisation force, two "
    "Egyptian officials said, as aid agencies warned of shortages before winter."
)


def newsroom(hub: str | None = None, limit: int = 50, **publishing: object) -> Config:
    return Config(
        sections=(
            Section("world", "World", "International news."),
            Section("opinion", "Opinion", paths=("/opinion/",)),
        ),
        topics=(
            Topic("palestine", "Palestine", keywords=("Gaza", "Palestin*")),
            Topic("climate", "Climate", keywords=("climate", "emissions")),
        ),
        sources=(
            Source("wire", "https://wire.example/feed", "world", title="The Wire", priority=10),
            Source("herald", "https://herald.example/rss", "world", title="Herald"),
            Source("blog", "https://blog.example/atom", "opinion"),
        ),
        outputs=(
            Output("all", "Everything", "Every story, once.", limit=limit),
            Output("copies", "Every copy", filter=Filter(every_item=True), limit=limit),
            Output(
                "gaza-wire",
                "Gaza from the wire",
                filter=Filter(topics=("palestine",), sources=("wire",), exclude=("cricket",)),
                formats=("atom", "json"),
            ),
        ),
        server=Server(base_url=BASE),
        publishing=Publishing(hub=hub, **publishing),  # type: ignore[arg-type]
    )


def entry(key: str, title: str, summary: str, link: str | None = None, **kw: object) -> Entry:
    link = link or f"https://news.example/{key}"
    return Entry(key=key, title=title, link=link, canonical_link=link, summary=summary, **kw)  # type: ignore[arg-type]


def fill(storage: Storage, processor: Processor, count: int = 6) -> list[SaveReport]:
    """`count` distinct stories from the herald, one told by the wire too, and a blog post."""
    reports = []
    topics = ["climate emissions rose", "markets steady", "Gaza aid convoy", "election count"]
    for n in range(count):
        reports.append(
            storage.save_entries(
                "herald",
                [
                    entry(
                        f"h{n}",
                        f"Herald story {n}",
                        f"<p>Story {n}: {topics[n % len(topics)]} in a report with "
                        f"number {n} and words {' '.join(f'w{n}x{i}' for i in range(30))}.</p>",
                        published=START + timedelta(hours=n),
                        authors=("Ann Author",),
                        enclosures=(Enclosure(f"https://herald.example/{n}.jpg", "image/jpeg"),),
                    )
                ],
                processor,
            )
        )
    reports.append(
        storage.save_entries(
            "herald",
            [entry("hw", "Gaza truce talks stall", WIRE, published=START + timedelta(hours=20))],
            processor,
        )
    )
    reports.append(
        storage.save_entries(
            "wire",
            [
                entry(
                    "w1",
                    "Gaza ceasefire talks hit snag",
                    WIRE + " More to follow.",
                    published=START + timedelta(hours=21),
                    authors=("Wire Desk",),
                )
            ],
            processor,
        )
    )
    reports.append(
        storage.save_entries(
            "blog",
            [
                entry(
                    "b1",
                    "Why climate plans fail",
                    "<p>An essay on climate policy.</p>",
                    link="https://blog.example/opinion/why",
                    published=START + timedelta(hours=22),
                )
            ],
            processor,
        )
    )
    return reports


@contextmanager
def serving(app: Any) -> Iterator[int]:
    """The app under the real server on 127.0.0.1, in a thread; yields its port."""
    server = WebServer(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    try:
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield server.port
    finally:
        server.stop()
        thread.join(timeout=10)
