"""Search: how fast items are indexed, and how long queries take, at a given size.

    python3 tasks.py bench search [--items 100000] [--database postgresql://...]

Stores `--items` news-like items (the ingest benchmark's text: 250 words each, nine in ten drawn
by a Zipf law from 20,000 made-up words) in a fresh database, without filing (storage alone),
then indexes them as the service's job does (`search.index.catch_up`, 200 a transaction) and
times it, then runs each query of QUERIES five times and prints the median and the worst, with
how many results the first page had. Prints the load average before and after: the machine is
shared.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import VOCABULARY, _reset_postgres, sentence

from aggregator.config import Source
from aggregator.search.index import catch_up
from aggregator.search.query import parse
from aggregator.storage import Storage
from aggregator.types import Entry

START = datetime(2026, 11, 20, tzinfo=UTC)
PER_SOURCE = 1_000


def queries() -> list[str]:
    common, middling, rare = VOCABULARY[0], VOCABULARY[300], VOCABULARY[15_000]
    return [
        common,  # in most items: ranking many matches is the cost
        rare,
        f"{middling} {VOCABULARY[301]}",
        f'"{common} {VOCABULARY[1]}"',
        f"{middling[:3]}*",
        f"{common} -{VOCABULARY[2]}",
    ]


def fill(storage: Storage, count: int) -> float:
    rng = random.Random(11)
    sources = [
        Source(f"s{n}", f"http://127.0.0.1/{n}.xml", "world")
        for n in range((count + PER_SOURCE - 1) // PER_SOURCE)
    ]
    storage.sync_sources(sources)
    started = time.perf_counter()
    for n in range(0, count, 25):
        source = sources[n // PER_SOURCE].id
        batch = [
            Entry(
                key=f"k{m}",
                title=sentence(rng, 10).rstrip("."),
                link=f"http://127.0.0.1/{m}",
                summary=f"<p>{sentence(rng, 250)}</p>",
                published=START + timedelta(minutes=m),
            )
            for m in range(n, min(n + 25, count))
        ]
        storage.save_entries(source, batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--database", help="a PostgreSQL URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as work:
        url = args.database or f"sqlite:///{Path(work) / 'search.db'}"
        if args.database:
            _reset_postgres(args.database)
        storage = Storage.open(url)
        stored = fill(storage, args.items)
        print(f"{storage.backend}: {args.items:,} items stored in {stored:.1f} s")
        started, cpu = time.perf_counter(), time.process_time()
        indexed = 0
        while True:
            done = catch_up(storage, budget=3600)
            indexed += done
            if not done:
                break
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"indexed {indexed:,} items in {wall:.1f} s ({indexed / wall:,.0f} items/s; "
            f"{cpu:.1f} s of this process's CPU)"
        )
        print(f"{'query':<28} {'median ms':>10} {'worst ms':>9} {'results':>8}")
        for written in queries():
            query = parse(written)
            times, found = [], 0
            for _ in range(5):
                began = time.perf_counter()
                found = len(storage.search(query.fts5(), query.tsquery(), 21))
                times.append((time.perf_counter() - began) * 1000)
            print(f"{written:<28} {statistics.median(times):>10.1f} {max(times):>9.1f} {found:>8}")
        storage.close()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
