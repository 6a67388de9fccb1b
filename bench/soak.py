"""Soak: `aggregator run` against N local sources for several minutes with a short interval.

    python3 tasks.py bench soak                         # 500 sources, 30 s interval, 6 minutes
    python3 tasks.py bench soak --sources 500 --minutes 10 --interval 30s

A threaded HTTP server on 127.0.0.1 (in this process) serves the feeds with ETags: a quarter of
them gain a new item every interval (200s with new items), every fifth feed carries its
neighbour's stories (merged as duplicates), the rest answer 304, and 1% answer 503 (the failure
path). The real service runs as a child process, exactly
as `python3 tasks.py run` starts it, on SQLite in a temporary folder. Every 10 s this script
reads the child's resident memory (/proc) and its /metrics (queue lag, fetches by outcome).
At the end it prints those figures and counts ERROR lines and tracebacks in its log.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# the service runs from its own environment, as a user runs it (tasks.py says which)
SERVICE_PYTHON = os.environ.get("AGGREGATOR_PYTHON", sys.executable)

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 11, 1, tzinfo=UTC)
WORDS = (  # noqa: SIM905 (a word list reads best as text)
    "government minister talks ceasefire election climate market energy court report crisis "
    "city council water health school police border refugees aid summit vote budget storm "
    "drought wildfire research science study museum festival league final transfer record "
    "president parliament protest strike union inflation rates trade deal sanctions harbour "
    "railway bridge hospital farmers harvest flood satellite telescope vaccine teachers nurses "
    "airport tariff currency pension housing rent tenants landlord mayor governor senate"
).split()


class Feeds:
    """Feed i has `version(i)` items; changing feeds gain one every `every` seconds."""

    def __init__(self, count: int, every: float) -> None:
        self.count = count
        self.every = every
        self.began = time.monotonic()

    def version(self, i: int) -> int:
        if i % 4:
            return 20
        return 20 + int((time.monotonic() - self.began) / self.every)

    def body(self, i: int, version: int) -> bytes:
        items = []
        for n in reversed(range(version - 20, version)):
            when = format_datetime(START + timedelta(minutes=n))
            # every fifth feed repeats its neighbour's stories: the same story from two outlets
            owner = i - 1 if i % 5 == 1 else i
            words = random.Random(owner * 100_003 + n)  # each story its own text
            title = " ".join(words.choice(WORDS) for _ in range(8)).capitalize()
            text = " ".join(words.choice(WORDS) for _ in range(60))
            items.append(
                f"<item><guid>f{i}-{n}</guid><title>{title}</title>"
                f"<link>https://outlet-{owner}.example/{n}</link>"
                f"<description>{text}.</description><pubDate>{when}</pubDate></item>"
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Outlet {i}</title><link>https://outlet-{i}.example/</link>"
            f"<description>d</description>{''.join(items)}</channel></rss>"
        ).encode()


def serve(feeds: Feeds) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            return

        def do_GET(self) -> None:
            match = re.fullmatch(r"/feed-(\d+)\.xml", self.path)
            i = int(match.group(1)) if match else -1
            if not 0 <= i < feeds.count or i % 100 == 99:
                self.send_response(503 if match else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            version = feeds.version(i)
            etag = '"' + hashlib.sha1(f"{i}:{version}".encode()).hexdigest()[:12] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = feeds.body(i, version)
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=500)
    parser.add_argument("--minutes", type=float, default=6)
    parser.add_argument("--interval", default="30s")
    args = parser.parse_args()
    seconds = int(args.interval.rstrip("s")) if args.interval.endswith("s") else 60
    feeds = Feeds(args.sources, float(seconds))
    server = serve(feeds)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="aggregator-soak-") as folder:
        work = Path(folder)
        sources = "".join(
            f"  - {{id: feed-{i}, url: 'http://127.0.0.1:{server.server_address[1]}"
            f"/feed-{i}.xml', section: world}}\n"
            for i in range(args.sources)
        )
        (work / "feeds.yaml").write_text(
            "sections: [{id: world, title: World}]\n"
            "topics: [{id: budget, title: Budget, keywords: [budget]}]\n"
            f"defaults: {{interval: {args.interval}}}\n"
            f"sources:\n{sources}"
            "polling: {host_gap: 0s, per_host: 16, concurrency: 16}\n"
            f"server: {{host: 127.0.0.1, port: {port}}}\n"
            "outputs: [{id: all, title: All, filter: {every_item: true}}]\n"
        )
        log_path = work / "service.log"
        with log_path.open("w") as log:
            child = subprocess.Popen(
                [SERVICE_PYTHON, "-m", "aggregator", "run", "--config", str(work / "feeds.yaml")],
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        samples: list[tuple[float, float, float, dict[str, float]]] = []
        began = time.monotonic()
        try:
            deadline = began + args.minutes * 60
            while time.monotonic() < deadline:
                time.sleep(10)
                if child.poll() is not None:
                    print(f"the service exited with {child.returncode}", file=sys.stderr)
                    break
                try:
                    metrics = scrape(port)
                except OSError:
                    continue
                elapsed = time.monotonic() - began
                memory = rss_mib(child.pid)
                lag = metrics.get("aggregator_queue_lag_seconds", -1.0)
                samples.append((elapsed, memory, lag, metrics))
                fetches = sum(v for k, v in metrics.items() if k.startswith("aggregator_fetches_"))
                items = metrics["aggregator_items_ingested_total"]
                print(
                    f"{elapsed:6.0f} s  rss {memory:6.1f} MiB  queue lag {lag:5.1f} s  "
                    f"fetches {fetches:7.0f}  items {items:7.0f}",
                    flush=True,
                )
        finally:
            child.terminate()
            code = child.wait(timeout=120)
            server.shutdown()
        text = log_path.read_text()
    if not samples:
        print("no samples", file=sys.stderr)
        return 1
    last = samples[-1][3]
    warm = [s for s in samples if s[0] >= 60] or samples
    memories = [s[1] for s in warm]
    lags = [s[2] for s in samples]
    outcomes = {
        k.split('"')[1]: int(v) for k, v in last.items() if k.startswith("aggregator_fetches_total")
    }
    errors = [line for line in text.splitlines() if " ERROR " in line]
    tracebacks = text.count("Traceback (most recent call last)")
    print()
    print(f"sources {args.sources}, interval {args.interval}, ran {samples[-1][0] / 60:.1f} min")
    print(
        f"memory (RSS) after the first minute: first {memories[0]:.1f} MiB, "
        f"min {min(memories):.1f}, max {max(memories):.1f}, last {memories[-1]:.1f} MiB"
    )
    print(
        f"queue lag: max {max(lags):.1f} s, median {statistics.median(lags):.1f} s, "
        f"last {lags[-1]:.1f} s"
    )
    print("fetches by outcome: " + ", ".join(f"{k} {v}" for k, v in outcomes.items() if v))
    mean = last["aggregator_fetch_duration_seconds_sum"] / max(1, sum(outcomes.values()))
    print(
        f"items ingested {last['aggregator_items_ingested_total']:.0f}, "
        f"duplicates merged {last['aggregator_duplicates_merged_total']:.0f}, "
        f"mean fetch {mean:.3f} s"
    )
    print(f"ERROR log lines {len(errors)}, tracebacks {tracebacks}, exit code {code}")
    for line in errors[:10]:
        print("  " + line)
    return 0 if code == 0 and not errors and not tracebacks else 1


if __name__ == "__main__":
    sys.exit(main())
