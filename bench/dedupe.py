"""Dedupe and categorisation throughput, with 1,000 and with 200,000 items in the window.

    python3 tasks.py bench dedupe [--window 1000 200000] [--items 5000] [--batch 25]

For each window size, the story index is first filled with that many items (as a worker does at
start, from the fingerprints in storage), then `--items` new items are processed in batches (a
poll's entries at a time), one core, in memory: filing (section rules, six topics' terms,
MinHash fingerprint), the index lookup, the check within the batch, and the addition, with the
rules of the labelled evaluation set. One item in ten is a lightly edited copy of a recent one,
so the matching path is exercised too (see `Writer` for how the text is made). Storage is left
out here (`bench/ingest.py` measures it), but for what storage does for the index: the index
keeps 8 bits of each MinHash value, and the candidates it gives are confirmed against their full
fingerprints, read back by id from a SQLite table of the window's items as storage reads them (in
the query that finds their stories; the new items' are kept in memory, so that storing them is
not timed); a match is counted once confirmed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as promised

from aggregator.config import load_config
from aggregator.feed.sanitize import html_to_text
from aggregator.process.fingerprint import fingerprint
from aggregator.process.pipeline import Processor
from aggregator.types import Entry

EVAL = Path(__file__).resolve().parent.parent / "tests" / "data" / "eval"
START = datetime(2026, 11, 20, tzinfo=UTC)


class Writer:
    """News-like items: mostly words drawn from a Zipf distribution over 30,000 words, which
    makes two unrelated items as alike on average as two unrelated items of the labelled set
    (mean Jaccard similarity of word pairs about 0.003); with words of a labelled item mixed
    in, in its language, so that section and topic rules fire about as often as on real items."""

    VOCABULARY = 30_000

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = [f"w{n}" for n in range(self.VOCABULARY)]
        self.cumulative = list(itertools.accumulate(1 / (n + 1) for n in range(self.VOCABULARY)))
        self.real: list[tuple[list[str], list[str], list[str]]] = []
        for line in (EVAL / "items.jsonl").read_text(encoding="utf-8").splitlines():
            data = json.loads(line)
            summary = html_to_text(data["summary"]).split()
            self.real.append((data["title"].split(), summary, data["categories"]))

    def text(self, count: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.cumulative, k=count)

    def _mixed(self, real: list[str], count: int, share: float) -> str:
        words = self.text(count)
        for _ in range(int(count * share)):
            words[self.rng.randrange(count)] = self.rng.choice(real)
        return " ".join(words)

    def entry(self, key: str, recent: Sequence[Entry]) -> Entry:
        if recent and self.rng.random() < 0.1:  # a wire copy of a recent item, lightly edited
            original = self.rng.choice(recent)
            words = original.summary.split()
            for _ in range(3):
                words[self.rng.randrange(len(words))] = self.text(1)[0]
            return Entry(key, " ".join(self.text(9)), summary=" ".join(words))
        title, summary, categories = self.rng.choice(self.real)
        return Entry(
            key,
            self._mixed(title, self.rng.randint(7, 13), 0.4),
            link=f"https://news.example/{key}",
            summary=self._mixed(summary, self.rng.randint(25, 55), 0.2),
            categories=tuple(categories),
        )


class _Prints:
    """Full fingerprints by item id, in SQLite, where the index's candidates are confirmed
    from (as storage keeps and reads them)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE prints (id INTEGER PRIMARY KEY, fp BLOB NOT NULL)")

    def add(self, rows: Iterable[tuple[int, bytes]]) -> None:
        with self.db:
            self.db.executemany("INSERT INTO prints VALUES (?, ?)", rows)

    def get(self, ids: set[int]) -> dict[int, bytes]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        query = f"SELECT id, fp FROM prints WHERE id IN ({marks})"
        return dict(self.db.execute(query, sorted(ids)).fetchall())

    def close(self) -> None:
        self.db.close()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(window: int, count: int, batch: int, seed: int, rounds: int) -> dict[str, float]:
    config = load_config(EVAL / "feeds.yaml")
    processor = Processor(config)
    index = processor.index
    assert index is not None
    sources = [s.id for s in config.sources]
    writer = Writer(seed)
    # the window: items spread over the last 72 hours, added in one go as at start-up
    backlog: list[tuple[int, bytes, datetime]] = []
    recent: deque[Entry] = deque(maxlen=200)  # what copies are made of
    started = time.perf_counter()
    for n in range(window):
        item = writer.entry(f"w{n}", recent)
        recent.append(item)
        fp = fingerprint(item)
        if fp:
            backlog.append((n + 1, fp, START - timedelta(hours=72) * (1 - n / max(window, 1))))
    fill = time.perf_counter()
    index.add_many(backlog)
    warm = time.perf_counter() - fill
    folder = tempfile.TemporaryDirectory()
    prints = _Prints(Path(folder.name) / "prints.db")
    prints.add((item_id, fp) for item_id, fp, _ in backlog)
    del backlog
    profiler = None
    if os.environ.get("BENCH_PROFILE"):  # where the measured time goes: BENCH_PROFILE=file.out
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    # the measured part: new items, a batch at a time, in rounds (the median round is reported)
    next_id = window + 1
    fresh: dict[int, bytes] = {}  # the new items' fingerprints (the window's are in `prints`)
    matched = 0
    rates = []
    for round_ in range(rounds):
        items = [writer.entry(f"n{round_}-{n}", recent) for n in range(count)]
        clock = time.perf_counter()
        for start in range(0, count, batch):
            chunk = items[start : start + batch]
            when = START + timedelta(seconds=start)
            # a poll's entries come from one source, and are filed together (as in a poll)
            filings = processor.file_all(sources[(start // batch) % len(sources)], chunk)
            fps = [f.fingerprint for f in filings if f.fingerprint]
            whens = [when] * len(fps)
            found = index.similar_many(fps, whens)
            index.similar_within(fps, whens)
            wanted = {m.item_id for matches in found for m in matches}
            full = prints.get({item_id for item_id in wanted if item_id <= window}) | {
                item_id: fresh[item_id] for item_id in wanted if item_id > window
            }
            for fp, matches in zip(fps, found, strict=True):
                candidates = [(m.item_id, full[m.item_id]) for m in matches]
                matched += bool(candidates and index.confirm(fp, candidates))
            index.add_many((next_id + i, fp, when) for i, fp in enumerate(fps))
            fresh.update((next_id + i, fp) for i, fp in enumerate(fps))
            next_id += len(fps)
        rates.append(count / (time.perf_counter() - clock))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.environ["BENCH_PROFILE"])
    prints.close()
    folder.cleanup()
    elapsed = count / statistics.median(rates)
    return {
        "window": window,
        "items": count,
        "seconds": elapsed,
        "per_second": count / elapsed,
        "matched": matched / rounds,
        "fill_seconds": fill - started,
        "index_load_seconds": warm,
        "index_mib": index.memory_bytes() / 1024**2,
        "peak_rss_mib": rss_mib(),
        "bands": index.bands,
        "rows": index.rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, nargs="+", default=[1000, 200_000])
    parser.add_argument("--items", type=int, default=10_000, help="new items a round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (the median is shown)")
    parser.add_argument("--batch", type=int, default=25, help="items per poll")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(
        f"{'window':>8} {'items/s':>9} {'matched':>8} {'index MiB':>10} {'peak RSS MiB':>13}"
        f" {'index load s':>13}"
    )
    for window in args.window:
        r = measure(window, args.items, args.batch, args.seed, args.rounds)
        print(
            f"{r['window']:>8} {r['per_second']:>9,.0f} {r['matched']:>8.0f} "
            f"{r['index_mib']:>10.1f} {r['peak_rss_mib']:>13.0f} {r['index_load_seconds']:>13.2f}",
            flush=True,
        )
    print(
        f"(one core; LSH {r['bands']} bands of {r['rows']}; batches of {args.batch}; "
        "peak RSS is the process's, cumulative over the runs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
