"""Ingestion benchmark: the project against lemon24/reader on the same feeds, side by side.

    python3 tasks.py bench ingest                          # 1,000 sources, 3 rounds
    python3 tasks.py bench ingest --sources 1000 10000 --rounds 5
    python3 tasks.py bench ingest --database postgresql://postgres@127.0.0.1/test
    python3 tasks.py bench ingest --database postgresql://postgres@127.0.0.1/test --workers 2

Feeds (20-30 items, 20-60 KB each, deterministic) are generated into a temporary folder and served
from memory by bench/feed_server.py on 127.0.0.1 (ETags and 304s). Each round runs, as fresh
processes, interleaved (the order alternates from round to round):
- the project: `aggregator poll --once` over a config of every source (one section, four topic
  rules, stories on; `polling: {host_gap: 0s, per_host: 8, concurrency: 8}`), on a fresh
  database, then again (every feed answers 304);
- reader (the release pip installs; one worker): `make_reader`, `add_feed` for every source and
  `update_feeds(scheduled=False)`, then `update_feeds(scheduled=False)` again in a new process.
Each pass is measured as a whole process: wall time, CPU time (user + system, its helper
processes included) and peak RSS, from the operating system (wait4), and the peak of the RSS of
the whole process tree summed, sampled every 50 ms from /proc (wait4 gives the largest single
process: the project's parsing helpers are separate processes), and the tree's peak PSS (each
shared page counted once, split between the processes sharing it; the RSS sum counts the
interpreter's and libraries' pages once a process: PSS is what the machine gives the tree). The
table gives medians over the rounds and reader's figure over the project's (above 1: the project
is faster or smaller).
feedparser alone on the same files is printed as a floor. The load average before and after is
printed: the machine is shared.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

# the service runs from its own environment, as a user runs it (tasks.py says which)
SERVICE_PYTHON = os.environ.get("AGGREGATOR_PYTHON", sys.executable)

ROOT = Path(__file__).resolve().parent.parent
WORDS = (  # noqa: SIM905 (a word list reads best as text)
    "government minister talks ceasefire election climate market energy court report crisis "
    "city council water health school police border refugees aid summit vote budget storm "
    "drought wildfire research science study museum festival league final transfer record "
    "president parliament protest strike union inflation rates trade deal sanctions Gaza Syria "
    "Ukraine Türkiye Kyiv Damascus Beirut Cairo Brussels Geneva Nairobi Jakarta Lima"
).split()


NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _vocabulary(size: int = 20_000) -> tuple[list[str], list[float]]:
    """Made-up words of one to four syllables, the commonest first, with cumulative Zipf
    weights: news-like text, where two unrelated items share few word pairs. Drawn from the 60
    words alone, unrelated items shared so many that the story index's candidates grew with its
    window (about 200 a query at 250,000 items), which real news does not do."""
    rng = random.Random(7)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))] = None
    return list(words), list(itertools.accumulate(1 / (n + 1) for n in range(size)))


VOCABULARY, CUMULATIVE = _vocabulary()


def sentence(rng: random.Random, n: int) -> str:
    """`n` words: one in ten from WORDS (so topic and section rules fire), the rest news-like."""
    drawn = rng.choices(VOCABULARY, cum_weights=CUMULATIVE, k=n)
    words = [rng.choice(WORDS) if rng.random() < 0.1 else word for word in drawn]
    return " ".join(words).capitalize() + "."


def make_feed(index: int, rng: random.Random) -> bytes:
    count = rng.randint(20, 30)
    target = rng.randint(20_000, 60_000)
    per_item = max(300, target // count - 450)
    # dated in the last day or so: inside the story window (72 h), as a real first pass is, so
    # the story index holds every item to the end (items dated weeks ago left it at the first
    # expiry, a minute in, which flattered the memory of a long pass)
    start = NOW - timedelta(hours=30)
    items = []
    for n in range(count):
        paragraphs: list[str] = []
        while sum(len(p) for p in paragraphs) < per_item:
            paragraphs.append(
                f"<p>{sentence(rng, rng.randint(12, 30))} "
                f'<a href="/story/{index}/{n}?utm_source=rss">more</a></p>'
            )
        if n % 7 == 0:
            paragraphs.append('<script>track()</script><img src="/i.png" onerror="x()">')
        when = start + timedelta(minutes=37 * n + index % 600)
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


# -- the passes, each a process of its own ----------------------------------------------------

TOPICS = """topics:
  - {id: gaza, title: Gaza, keywords: [Gaza, 'Palestin*']}
  - {id: syria, title: Syria, keywords: [Syria, Damascus]}
  - {id: climate, title: Climate, keywords: [climate, drought, wildfire, storm]}
  - {id: ukraine, title: Ukraine, keywords: [Ukraine, Kyiv]}
"""


def project_config(port: int, count: int, database: str) -> str:
    lines = "".join(
        f"  - {{id: s{i:05d}, url: 'http://127.0.0.1:{port}/s{i:05d}.xml', section: news}}\n"
        for i in range(count)
    )
    return (
        "sections: [{id: news, title: News}]\n"
        + TOPICS
        + "sources:\n"
        + lines
        + "polling: {host_gap: 0s, per_host: 8, concurrency: 8}\n"
        + f"storage: {{url: '{database}'}}\n"
    )


def run_reader(port: int, count: int, database: str, first: bool) -> None:
    from reader import make_reader

    reader = make_reader(database)
    if first:
        for i in range(count):
            reader.add_feed(f"http://127.0.0.1:{port}/s{i:05d}.xml", exist_ok=True)
    reader.update_feeds(scheduled=False, workers=1)
    counts = reader.get_entry_counts()
    print(json.dumps({"entries": counts.total}), flush=True)
    reader.close()


def run_floor(directory: Path) -> None:
    import feedparser

    bodies = [f.read_bytes() for f in sorted(directory.glob("*.xml"))]
    started = time.perf_counter()
    entries = sum(len(feedparser.parse(b).entries) for b in bodies)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "entries": entries}), flush=True)


@dataclass(frozen=True)
class Pass:
    wall: float
    cpu: float
    peak_mib: float
    output: str
    tree_mib: float = 0.0
    tree_pss_mib: float = 0.0


def _tree(root: int) -> set[int]:
    """`root` and every process below it, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, changed = {root}, True
    while changed:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        changed = bool(below)
        tree |= below
    return tree


def _kib(path: str, name: str) -> int:
    """A `name: N kB` line of a /proc file (0 if the process is gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree_memory(root: int) -> tuple[int, int]:
    """KiB resident in the tree: the sum of its processes' RSS, and of their PSS."""
    tree = _tree(root)
    rss = sum(_kib(f"/proc/{pid}/status", "VmRSS:") for pid in tree)
    pss = sum(_kib(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in tree)
    return rss, pss


def _sample_tree(pid: int, done: threading.Event, peak: list[int]) -> None:
    while not done.wait(0.05):
        rss, pss = _tree_memory(pid)
        peak[0] = max(peak[0], rss)
        peak[1] = max(peak[1], pss)


def measured(args: list[str], cwd: Path) -> Pass:
    """Run a process to its end; its wall time, CPU time and peak RSS from wait4."""
    started = time.perf_counter()
    process = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_environment(cwd)
    )
    assert process.stdout is not None
    done, peak = threading.Event(), [0, 0]
    sampler = threading.Thread(target=_sample_tree, args=(process.pid, done, peak), daemon=True)
    sampler.start()
    output = process.stdout.read().decode(errors="replace")
    done.set()
    sampler.join()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"bench: {' '.join(args[:4])} exited {process.returncode}:\n{output[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return Pass(wall, cpu, usage.ru_maxrss / 1024, output, peak[0] / 1024, peak[1] / 1024)


def _environment(work: Path) -> dict[str, str]:
    """The caller's environment without its AGGREGATOR_ settings, and validated configs kept in
    the round's own folder: its first pass validates the new config, as a first run does, and its
    second pass takes the config the first one kept, as every later run does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    return {**env, "AGGREGATOR_CACHE_DIR": str(work / "config-cache")}


def measured_together(runs: list[list[str]], cwd: Path) -> Pass:
    """Several processes started at once: wall time to the last exit, CPU summed, the largest
    single peak (wait4), and the sum of each process tree's sampled peak."""
    started = time.perf_counter()
    with ThreadPoolExecutor(len(runs)) as pool:
        passes = list(pool.map(lambda args: measured(args, cwd), runs))
    wall = time.perf_counter() - started
    return Pass(
        wall,
        sum(p.cpu for p in passes),
        max(p.peak_mib for p in passes),
        "\n".join(p.output for p in passes),
        sum(p.tree_mib for p in passes),
        sum(p.tree_pss_mib for p in passes),
    )


def _all_due(url: str) -> None:
    """Every source due again, so the second pass of several workers polls each one once."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("UPDATE sources SET next_due_at = :now"), {"now": datetime.now(UTC)})
    engine.dispose()


def project_passes(
    port: int, count: int, database: str | None, work: Path, workers: int = 1
) -> list[Pass]:
    """One `aggregator poll --once`; or, with several workers, that many `aggregator poll`
    processes at once, sharing the due sources through their leases (they take turns at creating
    the schema, as workers started together do)."""
    work.mkdir()
    url = database or f"sqlite:///{work / 'aggregator.db'}"
    if database:
        _reset_postgres(database)
    (work / "feeds.yaml").write_text(project_config(port, count, url))
    if workers == 1:
        args = [SERVICE_PYTHON, "-m", "aggregator", "poll", "--once", "--config", "feeds.yaml"]
        return [measured(args, work), measured(args, work)]
    args = [SERVICE_PYTHON, "-m", "aggregator", "poll", "--config", "feeds.yaml"]
    first = measured_together([args] * workers, work)
    _all_due(url)
    return [first, measured_together([args] * workers, work)]


def reader_passes(port: int, count: int, work: Path) -> list[Pass]:
    work.mkdir()
    url = str(work / "reader.sqlite")
    me = [sys.executable, __file__, "--child-reader", str(port), str(count), url]
    return [measured([*me, "first"], work), measured([*me, "again"], work)]


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


# -- the conductor ---------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


def bench(count: int, database: str | None, rounds: int, workers: int = 1) -> None:
    work = Path(tempfile.mkdtemp(prefix="aggregator-bench-"))
    feeds = work / "feeds"
    feeds.mkdir()
    try:
        size = generate(feeds, count)
        load_before = os.getloadavg()
        print(
            f"\n== {count:,} sources: {size / 1e6:.0f} MB of feeds, "
            f"{size / count / 1000:.0f} KB each on average; {rounds} rounds, interleaved; "
            f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
            flush=True,
        )
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "feed_server.py"), str(feeds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        port = int(server.stdout.readline().rsplit(":", 1)[1])
        ours: list[list[Pass]] = []
        theirs: list[list[Pass]] = []
        try:
            for round_ in range(rounds):
                runs = [
                    functools.partial(
                        _run_ours, ours, port, count, database, work, workers, round_
                    ),
                    functools.partial(_run_theirs, theirs, port, count, work, round_),
                ]
                for run in runs if round_ % 2 == 0 else runs[::-1]:
                    run()
                mine, peer = ours[-1], theirs[-1]
                print(
                    f"round {round_ + 1}: project {mine[0].wall:.1f} s + {mine[1].wall:.1f} s, "
                    f"reader {peer[0].wall:.1f} s + {peer[1].wall:.1f} s",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait()
        floor = measured([sys.executable, __file__, "--child-floor", str(feeds)], ROOT)
        floor_seconds = json.loads(floor.output.strip().splitlines()[-1])["seconds"]
        entries = json.loads(theirs[-1][1].output.strip().splitlines()[-1])["entries"]
        _table(ours, theirs)
        load_after = os.getloadavg()
        print(
            f"feedparser alone on the same files: {floor_seconds:.1f} s; reader stored "
            f"{entries:,} entries; project database: "
            f"{'SQLite' if not database else database.split(':', 1)[0]}; load average after "
            f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_ours(
    ours: list[list[Pass]],
    port: int,
    count: int,
    database: str | None,
    work: Path,
    workers: int,
    round_: int,
) -> None:
    ours.append(project_passes(port, count, database, work / f"project{round_}", workers))


def _run_theirs(theirs: list[list[Pass]], port: int, count: int, work: Path, round_: int) -> None:
    theirs.append(reader_passes(port, count, work / f"reader{round_}"))


def _table(ours: list[list[Pass]], theirs: list[list[Pass]]) -> None:
    print(f"{'median of the rounds':36}{'project':>10}{'reader':>10}{'reader / project':>18}")
    for index, name in ((0, "first pass"), (1, "second pass (304s)")):
        picks: tuple[tuple[str, str, Callable[[Pass], float]], ...] = (
            ("wall", "s", lambda p: p.wall),
            ("CPU", "s", lambda p: p.cpu),
            ("peak RSS", "MiB", lambda p: p.peak_mib),
            ("tree RSS", "MiB", lambda p: p.tree_mib),
            ("tree PSS", "MiB", lambda p: p.tree_pss_mib),
        )
        for label, unit, pick in picks:
            mine = _median([pick(r[index]) for r in ours])
            peer = _median([pick(r[index]) for r in theirs])
            print(
                f"{name + ', ' + label + ' (' + unit + ')':36}{mine:>10.1f}{peer:>10.1f}"
                f"{peer / mine:>17.2f}x"
            )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-reader":
        port, count, url, which = sys.argv[2:6]
        run_reader(int(port), int(count), url, which == "first")
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-floor":
        run_floor(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, nargs="+", default=[1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", help="a PostgreSQL URL for the project (default: SQLite)")
    parser.add_argument(
        "--workers", type=int, default=1, help="project worker processes polling at once"
    )
    args = parser.parse_args()
    for count in args.sources:
        bench(count, args.database, args.rounds, args.workers)


if __name__ == "__main__":
    main()
