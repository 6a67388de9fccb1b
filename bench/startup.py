"""Start-up benchmark: how soon the command answers, checks a big config, and fetches.

    python3 tasks.py bench startup [--rounds 5] [--sources 1000]

Prints the median and the slowest of `--rounds` runs (each a fresh process) of:
- `aggregator --version`;
- `aggregator check` of a generated config of `--sources` sources (targets: 0.3 s and 1.5 s);
- `aggregator poll --once` of one source on 127.0.0.1 with a fresh SQLite database (migrations
  included): the time from starting the process to its first fetch's log line (target: 2 s).
The load average is printed, since this machine is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# the service runs from its own environment, as a user runs it (tasks.py says which)
SERVICE_PYTHON = os.environ.get("AGGREGATOR_PYTHON", sys.executable)

AGGREGATOR = [SERVICE_PYTHON, "-m", "aggregator"]
FEED = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
    b"<item><guid>1</guid><title>One</title><link>https://t.example/1</link></item>"
    b"</channel></rss>"
)


class _Feed(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(FEED)))
        self.end_headers()
        self.wfile.write(FEED)

    def log_message(self, *_args: object) -> None:
        return


def _config(sources: int) -> str:
    lines = [
        "sections: [{id: world, title: World}]",
        "topics:",
        "  - {id: gaza, title: Gaza, keywords: [Gaza, 'Palestin*']}",
        "  - {id: climate, title: Climate, keywords: [climate, drought, wildfire]}",
        "sources:",
    ]
    lines += [
        f"  - {{id: s{n}, url: 'https://site{n}.example/feed.xml', section: world, topics: [gaza]}}"
        for n in range(sources)
    ]
    return "\n".join(lines) + "\n"


def _timed(args: list[str], cwd: Path, until: str | None = None) -> float:
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    seen = None
    for line in process.stdout:
        if until and until in line and seen is None:
            seen = time.perf_counter() - started
    code = process.wait()
    if code != 0:
        raise SystemExit(f"{' '.join(args)} exited {code}")
    if until and seen is None:
        raise SystemExit(f"{' '.join(args)} never printed {until!r}")
    return seen if seen is not None else time.perf_counter() - started


def _report(name: str, times: list[float], target: float) -> None:
    median = statistics.median(times)
    print(
        f"{name:<34} median {median:6.3f} s  slowest {max(times):6.3f} s  "
        f"(target {target} s: {'met' if median < target else 'NOT met'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sources", type=int, default=1000)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Feed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        big = root / "big.yaml"
        big.write_text(_config(args.sources))
        one = root / "one.yaml"
        one.write_text(
            "sections: [{id: world, title: World}]\nsources:\n"
            f"  - {{id: one, url: 'http://127.0.0.1:{server.server_port}/feed', "
            "section: world}\n"
        )
        version, check, fetch = [], [], []
        for round_ in range(args.rounds):
            version.append(_timed([*AGGREGATOR, "--version"], root))
            check.append(_timed([*AGGREGATOR, "check", str(big)], root))
            work = root / f"run{round_}"
            work.mkdir()
            fetch.append(
                _timed([*AGGREGATOR, "poll", "--once", "--config", str(one)], work, "one: 200")
            )
    server.shutdown()
    print(f"load average before: {load_before:.2f}; {args.rounds} rounds")
    _report("aggregator --version", version, 0.3)
    _report(f"aggregator check ({args.sources} sources)", check, 1.5)
    _report("poll --once: first fetch logged", fetch, 2.0)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
