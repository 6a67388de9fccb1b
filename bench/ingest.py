"""Ingestion benchmark: a first poll cycle (all content) and a second (all 304) of N sources.

    python3 tasks.py bench                      # 1,000 and 10,000 sources, SQLite
    python3 tasks.py bench --sources 1000       # one size
    python3 tasks.py bench --database postgresql://postgres@127.0.0.1/test

Feeds (20-30 items, 20-60 KB each, deterministic) are generated into a temporary folder and served
from memory by bench/feed_server.py on 127.0.0.1. Each cycle runs the real poller (claim, fetch,
parse, sanitise, store) in a child process, which reports its own wall time and peak memory. The
floor is feedparser alone, with its default settings, parsing the same files in one process.
Politeness limits are lifted (one host serves everything here); concurrency is `--concurrency`.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = (  # noqa: SIM905 (a word list reads best as text)
    "government minister talks ceasefire election climate market energy court report crisis "
    "city council water health school police border refugees aid summit vote budget storm "
    "drought wildfire research science study museum festival league final transfer record "
    "president parliament protest strike union inflation rates trade deal sanctions Gaza Syria "
    "Ukraine Türkiye Kyiv Damascus Beirut Cairo Brussels Geneva Nairobi Jakarta Lima"
).split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_feed(index: int, rng: random.Random) -> bytes:
    count = rng.randint(20, 30)
    target = rng.randint(20_000, 60_000)
    per_item = max(300, target // count - 450)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    items = []
    for n in range(count):
        paragraphs = []
        while sum(len(p) for p in paragraphs) < per_item:
            paragraphs.append(
                f"<p>{sentence(rng, rng.randint(12, 30))} "
                f'<a href="/story/{index}/{n}?utm_source=rss">more</a></p>'
            )
        if n % 7 == 0:
            paragraphs.append('<script>track()</script><img src="/i.png" onerror="x()">')
        when = start + timedelta(minutes=37 * n + index)
        items.append(
            f"<item><title>{sentence(rng, 8)}</title>"
            f"<link>https://outlet{index % 97}.example/story/{index}/{n}</link>"
            f'<guid isPermaLink="false">src{index}-item{n}</guid>'
            f"<pubDate>{format_datetime(when)}</pubDate>"
            f"<category>{rng.choice(WORDS)}</category>"
            f"<description><![CDATA[<p>{sentence(rng, 25)}</p>]]></description>"
            f"<content:encoded><![CDATA[{''.join(paragraphs)}]]></content:encoded></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        f"<channel><title>Source {index}</title><link>https://outlet{index % 97}.example/</link>"
        f"<description>Generated feed {index}</description>{''.join(items)}</channel></rss>"
    ).encode()


def generate(directory: Path, count: int) -> int:
    rng = random.Random(20261124)
    total = 0
    for i in range(count):
        body = make_feed(i, rng)
        (directory / f"s{i:05d}.xml").write_bytes(body)
        total += len(body)
    return total


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- child: the poll cycles ------------------------------------------------------------------


def run_cycles(port: int, count: int, database: str, concurrency: int) -> None:
    from aggregator.config import load_text
    from aggregator.fetch import Fetcher, user_agent
    from aggregator.poll import Poller
    from aggregator.storage import Storage

    lines = "".join(
        f"  - {{id: s{i:05d}, url: 'http://127.0.0.1:{port}/s{i:05d}.xml', section: news}}\n"
        for i in range(count)
    )
    config = load_text(
        "sections: [{id: news, title: News}]\nsources:\n"
        + lines
        + f"polling: {{host_gap: 0s, per_host: {concurrency}, concurrency: {concurrency}}}\n",
        "bench.yaml",
        env={},
    )
    storage = Storage.open(database)
    storage.sync_sources(config.sources)
    ids = [s.id for s in config.sources]
    with Fetcher(
        user_agent=user_agent(None), host_gap=0.0, per_host=concurrency, connections=concurrency
    ) as fetcher:
        poller = Poller(storage, config, fetcher)
        for cycle in ("first", "second"):
            started = time.perf_counter()
            results = poller.run_once(only=ids)
            seconds = time.perf_counter() - started
            print(
                json.dumps(
                    {
                        "cycle": cycle,
                        "seconds": seconds,
                        "sources": len(results),
                        "failed": sum(not r.ok for r in results),
                        "new": sum(r.new for r in results),
                        "not_modified": sum(r.status == 304 for r in results),
                        "peak_mib": peak_mib(),
                    }
                ),
                flush=True,
            )
    print(json.dumps({"items": storage.count_items()}), flush=True)
    storage.close()


# -- child: the floor ------------------------------------------------------------------------


def run_floor(directory: Path) -> None:
    import feedparser

    files = sorted(directory.glob("*.xml"))
    bodies = [f.read_bytes() for f in files]
    started = time.perf_counter()
    entries = sum(len(feedparser.parse(b).entries) for b in bodies)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "entries": entries, "peak_mib": peak_mib()}), flush=True)


# -- the conductor ---------------------------------------------------------------------------


def child(*args: str) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if result.returncode != 0:
        sys.exit(f"bench child failed:\n{result.stderr[-3000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def bench(count: int, database: str | None, concurrency: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="aggregator-bench-"))
    feeds = work / "feeds"
    feeds.mkdir()
    try:
        size = generate(feeds, count)
        print(
            f"\n== {count:,} sources: {size / 1e6:.0f} MB of feeds, "
            f"{size / count / 1000:.0f} KB each on average",
            flush=True,
        )
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "feed_server.py"), str(feeds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        port = int(server.stdout.readline().rsplit(":", 1)[1])
        try:
            url = database or f"sqlite:///{work / 'bench.db'}"
            cycles = child("--child-cycles", str(port), str(count), url, str(concurrency))
        finally:
            server.terminate()
            server.wait()
        floor = child("--child-floor", str(feeds))[0]
        first, second, stored = cycles
        print(f"{'':34}{'wall s':>9}{'sources/s':>11}{'peak MiB':>10}")
        for label, row in (
            ("first cycle (all content)", first),
            ("second cycle (all 304)", second),
        ):
            print(
                f"{label:34}{row['seconds']:>9.1f}{count / float(row['seconds']):>11.0f}"  # type: ignore[arg-type]
                f"{row['peak_mib']:>10.0f}"
            )
        print(
            f"{'feedparser alone, same files':34}{floor['seconds']:>9.1f}"
            f"{count / float(floor['seconds']):>11.0f}{floor['peak_mib']:>10.0f}"
        )  # type: ignore[arg-type]
        ratio = float(first["seconds"]) / float(floor["seconds"])  # type: ignore[arg-type]
        print(
            f"first cycle / feedparser alone: {ratio:.2f}x; "
            f"items stored: {stored['items']:,}; failures: {first['failed']} + {second['failed']}; "
            f"304s in second cycle: {second['not_modified']:,}; database: "
            f"{'SQLite' if not database else database.split(':', 1)[0]}; "
            f"concurrency {concurrency}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-cycles":
        port, count, url, concurrency = sys.argv[2:6]
        run_cycles(int(port), int(count), url, int(concurrency))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-floor":
        run_floor(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--database", help="a database URL (default: a fresh SQLite file)")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    for count in args.sources:
        bench(count, args.database, args.concurrency)


if __name__ == "__main__":
    main()
