"""A big feed must not lock out the others: entries per document are capped (the newest kept,
and the source says so), items of one batch are compared through LSH buckets rather than all
pairs, and the comparing happens before the write transaction, so other workers go on storing.

Real parts: a real HTTP server on 127.0.0.1, real SQLite and PostgreSQL, the real CLI and status
board. Nothing here is timed; a thread's join bound is only a guard against hanging.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import cli
from aggregator.config import Config, load_text
from aggregator.evaluate import load_labelled
from aggregator.feed.normalise import normalise
from aggregator.feed.parse import parse_document
from aggregator.health import Health, assess
from aggregator.poll import Poller, PollResult
from aggregator.process.dedupe import (
    WITHIN_HEAD,
    WITHIN_TAIL,
    SimilarityIndex,
    alike,
    similarity,
)
from aggregator.process.fingerprint import fingerprint
from aggregator.process.pipeline import Processor
from aggregator.status import StatusBoard
from aggregator.storage import Storage
from aggregator.types import Entry, FetchRecord
from tests.feedserver import FeedServer, feed_file
from tests.support import Clock, Harness, rss

EVAL = Path(__file__).resolve().parent / "data" / "eval"
HANG_GUARD = 60.0  # seconds: only so that a regression fails instead of hanging the suite
START = datetime(2026, 11, 20, tzinfo=UTC)
HARBOUR = (
    "The council approved the new harbour plan on Tuesday after a long debate about costs and "
    "the fishing fleet, which had asked for more berths, a longer breakwater and a promise that "
    "the old market hall would stay open while the works go on next year"
)
BODY = HARBOUR.split()
TITLE = "Council approves the harbour plan"


def variant(n: int) -> str:
    """The text with its n-th word (round the text) replaced by one of its own."""
    words = list(BODY)
    words[n % len(words)] = f"x{n}"
    return " ".join(words)


def near_identical(name: str, count: int) -> bytes:
    """An RSS document of `count` items that differ in one word of their text (about 0.9 alike),
    one second apart, newest first as feeds list them."""
    items = [
        f"<item><guid>{name}-{n}</guid><title>{TITLE}</title>"
        f"<link>https://{name}.example/s/{n}</link><description>{variant(n)}</description>"
        f"<pubDate>{format_datetime(START + timedelta(seconds=n))}</pubDate></item>"
        for n in reversed(range(count))
    ]
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>https://{name}.example/</link><description>d</description>{''.join(items)}"
        "</channel></rss>"
    ).encode()


def config_text(server: FeedServer, names: Sequence[str], polling: str = "") -> str:
    sources = "".join(
        f"  - {{id: {name}, url: '{server.url(f'/{name}.xml')}', section: world}}\n"
        for name in names
    )
    return (
        "sections: [{id: world, title: World}]\n"
        f"sources:\n{sources}"
        f"polling: {{timeout: 30s, max_size: 50MiB, host_gap: 0s{polling}}}\n"
    )


def make_config(server: FeedServer, names: Sequence[str], polling: str = "") -> Config:
    return load_text(config_text(server, names, polling), "test.yaml", env={})


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


def poll_guarded(poller: Poller, only: Sequence[str]) -> list[PollResult]:
    """One poll in a thread, failing the test if it has not finished within the hang guard."""
    results: list[PollResult] = []
    worker = threading.Thread(target=lambda: results.extend(poller.run_once(only=list(only))))
    worker.start()
    worker.join(HANG_GUARD)
    assert not worker.is_alive(), f"the poll did not finish within {HANG_GUARD:.0f} s"
    return results


def test_a_big_feed_keeps_its_newest_entries_and_says_so(
    server: FeedServer, storage: Storage, database_url: str, tmp_path: Path
) -> None:
    server.routes["/big.xml"] = feed_file(near_identical("big", 5_000))
    config = make_config(server, ["big"])
    assert config.polling.max_entries == 1_000  # the default
    with Harness(storage, config, "w1") as harness:
        (result,) = poll_guarded(harness.poller, ["big"])
    warning = "the feed has 5,000 entries; the newest 1,000 were taken"
    assert (result.ok, result.new, result.warning) == (True, 1_000, warning)
    stored = {item.entry.link for item in storage.recent_items(limit=2_000, source_id="big")}
    assert stored == {f"https://big.example/s/{n}" for n in range(4_000, 5_000)}
    state = storage.source("big")
    assert state is not None
    assert (state.last_warning, state.last_entry_count) == (warning, 5_000)
    assert assess(state, config.polling.unhealthy_after) is Health.WARNING
    # editors see it: `aggregator sources`, /status and /status.json
    path = tmp_path / "feeds.yaml"
    path.write_text(config_text(server, ["big"]))
    listed = CliRunner().invoke(
        cli, ["sources", "-c", str(path)], env={"AGGREGATOR_DATABASE_URL": database_url}
    )
    assert listed.exit_code == 0, listed.output
    (row,) = [line for line in listed.output.splitlines() if line.startswith("big ")]
    assert "warning" in row and warning in row
    board = StatusBoard(storage, lambda: config, None)
    (shown,) = json.loads(board.json())["sources"]
    assert (shown["status"], shown["last_warning"], shown["entries_in_feed"]) == (
        "warning",
        warning,
        5_000,
    )
    assert warning in board.html().decode()


def test_undated_entries_count_as_older_than_dated_ones(
    server: FeedServer, storage: Storage
) -> None:
    """Past the cap, dated entries are taken newest first; undated ones only if room is left,
    in the order the feed lists them."""
    dated = rss("d", 4).decode()  # d-3 (newest) .. d-0
    undated = "".join(
        f"<item><guid>u-{n}</guid><title>Undated {n}</title><description>Body {n}</description>"
        "</item>"
        for n in range(3)
    )
    body = dated.replace("</channel>", undated + "</channel>").encode()
    server.routes["/mixed.xml"] = feed_file(body)
    config = make_config(server, ["mixed"], ", max_entries: 5")
    with Harness(storage, config, "w1") as harness:
        (result,) = poll_guarded(harness.poller, ["mixed"])
    assert result.warning == "the feed has 7 entries; the newest 5 were taken"
    stored = {item.entry.guid for item in storage.recent_items(source_id="mixed")}
    assert stored == {server.url(f"/{guid}") for guid in ("d-0", "d-1", "d-2", "d-3", "u-0")}


def test_a_batch_of_alike_items_is_compared_in_buckets_not_in_all_pairs(
    server: FeedServer, storage: Storage
) -> None:
    count = 3_000
    server.routes["/big.xml"] = feed_file(near_identical("big", count))
    config = make_config(server, ["big"], ", max_entries: 10000")
    with Harness(storage, config, "w1") as harness:
        (result,) = poll_guarded(harness.poller, ["big"])
    assert (result.ok, result.new, result.warning) == (True, count, None)
    assert result.merged == count - 1  # all alike: one story, as comparing every pair finds
    stories = {item.story_id for item in storage.recent_items(limit=count, source_id="big")}
    assert len(stories) == 1 and None not in stories
    index = harness.poller.processor.index
    assert index is not None
    all_pairs = count * (count - 1) // 2  # 4.5 million
    assert index.compared <= count * index.bands * (WITHIN_HEAD + WITHIN_TAIL)  # the bound
    assert index.compared < all_pairs // 20  # in fact: about 50 an item


def test_comparisons_grow_linearly_with_the_batch() -> None:
    """Three times the items, about three times the comparisons (all pairs would be nine)."""
    fps = [
        fp for n in range(3_000) if (fp := fingerprint(Entry(f"k{n}", TITLE, summary=variant(n))))
    ]
    counts = []
    for size in (1_000, 3_000):
        index = SimilarityIndex(0.5, timedelta(hours=72))
        found = index.similar_within(fps[:size], [START] * size)
        assert all(found[1:]) and not found[0]  # every item is alike an earlier one
        counts.append(index.compared)
    assert counts[1] <= 3.5 * counts[0]


def test_within_a_batch_the_most_alike_earlier_item_is_found() -> None:
    """On the labelled set taken as one batch, the bucketed comparison names the same earlier
    item for every item as comparing every pair does (the most alike, the earliest of equals);
    and identical copies all follow the first, however many there are."""
    labelled = sorted(load_labelled(EVAL / "items.jsonl"), key=lambda i: (i.published, i.id))
    entries = normalise([item.raw for item in labelled], "https://eval.example/", START)
    prints = [fp for entry in entries if (fp := fingerprint(entry))]
    prints += [prints[0]] * 40  # copies: a bucket far larger than the ones looked at whole
    index = SimilarityIndex(0.5, timedelta(hours=72))
    found = index.similar_within(prints, [START] * len(prints))
    firsts = [pairs[0][0] if pairs else None for pairs in found]
    assert firsts == [_best_earlier(prints, i, index.threshold) for i in range(len(prints))]
    assert sum(first is not None for first in firsts) > 60  # the set has its duplicates


def _best_earlier(prints: list[bytes], i: int, threshold: float) -> int | None:
    """All pairs, the slow way: the most alike earlier item at or above the threshold."""
    scored = [
        (similarity(prints[i], prints[j]), -j)
        for j in range(i)
        if alike(prints[i], prints[j], threshold)
    ]
    return -max(scored)[1] if scored else None


class Hook(SimilarityIndex):
    """The real index, running `during` when it starts comparing a big batch within itself."""

    def __init__(self, config: Config, during: Callable[[], None]) -> None:
        super().__init__(config.dedupe.threshold, config.dedupe.window)
        self.during = during

    def similar_within(
        self, fps: Sequence[bytes], whens: Sequence[datetime]
    ) -> list[list[tuple[int, float]]]:
        if len(fps) > 100:
            self.during()
        return super().similar_within(fps, whens)


class HookedProcessor(Processor):
    """The real processor, with the hooked index."""

    def __init__(self, config: Config, hook: Hook) -> None:
        super().__init__(config)
        self.hook = hook

    @property
    def index(self) -> SimilarityIndex | None:
        return self.hook


def test_another_worker_stores_a_small_feed_while_a_big_one_is_compared(
    server: FeedServer, storage: Storage, database_url: str, clock: Clock
) -> None:
    """Worker 1 stores a big feed of alike items; when it starts comparing them, worker 2 (its
    own engine on the same database) polls a small feed, and worker 1 waits for it (up to the
    hang guard). Worker 2 must get through while worker 1 holds no lock: it is done before
    worker 1 has stored anything, and its items have lower ids than every item of the big feed
    (ids are handed out under the story lock, in commit order)."""
    server.routes["/small.xml"] = feed_file(rss("small", 3))
    config = make_config(server, ["big", "small"], ", max_entries: 5000")
    storage.sync_sources(config.sources)
    events: list[str] = []
    second = Storage.open(database_url, clock=clock)
    harness = Harness(second, config, "w2")
    workers: list[threading.Thread] = []

    def small_poll() -> None:
        results = harness.poller.run_once(only=["small"])
        events.append(f"small: stored {results[0].new}")

    def while_comparing() -> None:
        events.append("big: comparing")
        workers.append(threading.Thread(target=small_poll))
        workers[0].start()
        workers[0].join(HANG_GUARD)

    try:
        hooked = HookedProcessor(config, Hook(config, while_comparing))
        document = near_identical("big", 2_000)
        now = clock()
        parsed = parse_document(document, server.url("/big.xml"), now, "application/rss+xml")
        record = FetchRecord("big", now, now + timedelta(minutes=15), status=200)
        saved = storage.record_fetch(record, parsed.entries, filer=hooked)
        events.append("big: stored")
    finally:
        for worker in workers:
            worker.join(HANG_GUARD)
        harness.close()
        second.close()
    assert saved is not None and len(saved.new) == 2_000
    assert events == ["big: comparing", "small: stored 3", "big: stored"]
    small_ids = [item.id for item in storage.recent_items(source_id="small")]
    big_ids = [item.id for item in storage.recent_items(limit=5_000, source_id="big")]
    assert len(small_ids) == 3 and len(big_ids) == 2_000
    assert max(small_ids) < min(big_ids)
