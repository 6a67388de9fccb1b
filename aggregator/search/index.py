"""Keeping the search index current: what an item is indexed as, and the job that indexes.

The service runs `catch_up` every few seconds (where searches are answered: `run` and `web`),
in batches, each its own short transaction, so the poller's writes never wait long behind it.
"""

from __future__ import annotations

import logging
import time

from aggregator.feed.sanitize import html_to_text
from aggregator.process.text import folded_words
from aggregator.storage import Storage

log = logging.getLogger("aggregator.search")

BATCH = 200  # items a transaction
BUDGET = 1.0  # seconds a tick spends at most (a fifth of the time): polling comes first


def document(title: str, summary: str, content: str, article: str | None) -> tuple[str, str]:
    """An item's (title, body) as the index reads them: folded words, as a query's are."""
    parts = [html_to_text(summary), html_to_text(article or content)]
    return folded_words(title), folded_words(" ".join(parts))


def catch_up(storage: Storage, budget: float = BUDGET) -> int:
    """Index what is waiting, for at most `budget` seconds; how many items were indexed."""
    end = time.monotonic() + budget
    done = 0
    while True:
        indexed = storage.index_for_search(document, BATCH)
        done += indexed
        if indexed < BATCH or time.monotonic() >= end:
            break
    if done:
        log.debug("search index: %d items indexed", done)
    return done
