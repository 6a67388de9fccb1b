"""An all-304 poll's cost a source, in one process, start-up left out.

    python3 tasks.py bench poll [--sources 1000] [--rounds 5]

The feeds of `bench ingest` (generated, served from memory with ETags by bench/feed_server.py on
127.0.0.1) are polled by one `Poller` in one process of the service's environment, on a fresh
SQLite database with `bench ingest`'s config: once to store them, then `--rounds` more times, every
source answering 304. Each round's wall and CPU time a source is printed, and their medians. This
is a running service's usual poll; `bench ingest`'s second pass is this plus a process's start-up
(about half of it), and moves with the start-up's noise. To compare two versions of the code, run
this for each in turn, a few times (a worktree on PYTHONPATH): the machine is shared, so compare
runs close in time, and say the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ingest

SERVICE_PYTHON = ingest.SERVICE_PYTHON


def inner(config_path: str, rounds: int) -> None:
    """In the service's environment: the poller, its first pass, then the measured rounds."""
    from aggregator import logs
    from aggregator.config.loader import load_config
    from aggregator.poll import Poller, make_fetcher
    from aggregator.storage import Storage

    logs.setup("INFO")  # a line a source, as the service logs (to stderr, dropped here)
    config = load_config(Path(config_path))
    storage = Storage.open(config.storage.url)
    storage.sync_sources(config.sources)
    ids = [source.id for source in config.sources]
    with make_fetcher(config) as fetcher:
        poller = Poller(storage, config, fetcher)
        try:
            first = poller.run_once(only=ids)
            stored = sum(result.new for result in first)
            for _ in range(rounds):
                wall, cpu = time.perf_counter(), time.process_time()
                results = poller.run_once(only=ids)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                statuses = sorted({str(result.status) for result in results})
                line = {"sources": len(results), "wall": wall, "cpu": cpu, "statuses": statuses}
                print(json.dumps({**line, "stored": stored}), flush=True)
        finally:
            poller.close()
    storage.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.inner[0], int(args.inner[1]))
        return 0
    work = Path(tempfile.mkdtemp(prefix="aggregator-bench-poll-"))
    feeds = work / "feeds"
    feeds.mkdir()
    ingest.generate(feeds, args.sources)
    load = os.getloadavg()
    print(
        f"{args.sources:,} sources, {args.rounds} rounds of an all-304 poll in one process; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("feed_server.py")), str(feeds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().rsplit(":", 1)[1])
        config = work / "feeds.yaml"
        database = f"sqlite:///{work / 'bench.db'}"
        config.write_text(ingest.project_config(port, args.sources, database), encoding="utf-8")
        measured = subprocess.run(
            [SERVICE_PYTHON, __file__, "--inner", str(config), str(args.rounds)],
            cwd=work,
            env=ingest._environment(work),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            check=True,
        )
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    rounds = [json.loads(line) for line in measured.stdout.splitlines() if line.startswith("{")]
    walls, cpus = [], []
    for n, r in enumerate(rounds, 1):
        if r["statuses"] != ["304"]:
            print(f"round {n}: not every source answered 304: {r['statuses']}", file=sys.stderr)
            return 1
        walls.append(1000 * r["wall"] / r["sources"])
        cpus.append(1000 * r["cpu"] / r["sources"])
        print(f"round {n}: {walls[-1]:.3f} ms wall, {cpus[-1]:.3f} ms CPU a source")
    load = os.getloadavg()
    print(
        f"median: {statistics.median(walls):.3f} ms wall, {statistics.median(cpus):.3f} ms CPU a "
        f"source ({rounds[0]['stored']:,} items stored by the first poll); load average after "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
