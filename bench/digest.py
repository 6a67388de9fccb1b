"""Render and send one digest to 10,000 recipients through a local SMTP server.

    python3 tasks.py bench digest [--recipients 10000] [--items 60]

A temporary SQLite database gets `--items` stories; a digest lists them for `--recipients`
addresses. An SMTP server (aiosmtpd) runs in its own process on 127.0.0.1 and counts what it
accepts. The real sender (`Dispatcher.run`: claim the period, compose, render once, then per
recipient an unsubscribe token, a message, the SMTP transaction over one reused connection and a
delivery record committed at once) is timed end to end. Target: under 60 s on this machine.
Printed: seconds, messages/s, message size, and the sender's peak memory (RSS).
"""

from __future__ import annotations

import argparse
import resource
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator.config import (  # noqa: E402
    Config,
    Digest,
    Filter,
    Publishing,
    Section,
    Server,
    Smtp,
    Source,
)
from aggregator.digest.dispatch import Dispatcher  # noqa: E402
from aggregator.digest.periods import Period  # noqa: E402
from aggregator.digest.send import Mailer  # noqa: E402
from aggregator.storage import Storage  # noqa: E402
from aggregator.tokens import Signer  # noqa: E402
from aggregator.types import DeliveryStatus, Entry  # noqa: E402

SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from aiosmtpd.controller import Controller

    class Counting:
        count = 0
        size = 0
        async def handle_DATA(self, server, session, envelope):
            Counting.count += 1
            Counting.size += len(envelope.original_content or envelope.content)
            return "250 OK"

    controller = Controller(Counting(), hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    print("ready", flush=True)
    for line in sys.stdin:
        print(Counting.count, Counting.size, flush=True)
    controller.stop()
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _say(message: str) -> None:
    print(f"bench digest: {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--connections", type=int, default=2, help="smtp.connections")
    args = parser.parse_args()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    try:
        assert server.stdout.readline().strip() == "ready"
        with tempfile.TemporaryDirectory(prefix="bench-digest-") as folder:
            _run(Path(folder), port, args.recipients, args.items, args.connections, server)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _run(
    folder: Path,
    port: int,
    recipients: int,
    count: int,
    connections: int,
    server: subprocess.Popen[str],
) -> None:
    assert server.stdin is not None and server.stdout is not None
    start = datetime(2026, 11, 23, 7, tzinfo=UTC)
    now = [start + timedelta(minutes=1)]
    addresses = tuple(f"reader{n:05d}@example.org" for n in range(recipients))
    config = Config(
        sections=(Section("world", "World"),),
        sources=(Source("wire", "https://wire.example/feed", "world", title="The Wire"),),
        digests=(
            Digest(
                "daily",
                "Daily briefing",
                "0 7 * * *",
                timezone="Europe/London",
                filter=Filter(),
                recipients=addresses,
                sender="news@example.org",
                max_items=50,
            ),
        ),
        smtp=Smtp(host="127.0.0.1", port=port, security="none", rate=0, connections=connections),
        server=Server(base_url="http://news.example.org/"),
        publishing=Publishing(title="The Aggregator"),
    )
    storage = Storage.open(f"sqlite:///{folder}/bench.db", clock=lambda: now[0])
    storage.sync_sources(config.sources)
    words = " ".join(f"word{n}" for n in range(80))
    for n in range(count):
        now[0] = start + timedelta(minutes=n + 1)
        storage.save_entries(
            "wire",
            [
                Entry(
                    key=f"k{n}",
                    title=f"Story number {n} about the day's events",
                    link=f"https://wire.example/story/{n}",
                    summary=f"<p>Story {n}: {words}.</p>",
                    published=now[0],
                )
            ],
        )
    now[0] = start + timedelta(days=1)
    period = Period(start, start + timedelta(days=1))
    dispatcher = Dispatcher(
        storage,
        config,
        Signer("a benchmark secret, long enough"),
        lambda: Mailer(config.smtp),
        "bench",
        clock=lambda: now[0],
    )
    _say(f"sending {count} stories to {recipients:,} recipients through 127.0.0.1:{port}")
    began = time.perf_counter()
    report = dispatcher.run(config.digests[0], period)
    seconds = time.perf_counter() - began
    server.stdin.write("count\n")
    server.stdin.flush()
    received, size = (int(x) for x in server.stdout.readline().split())
    run = storage.digest_runs("daily")[0]
    recorded = sum(d.status is DeliveryStatus.SENT for d in storage.deliveries(run.id))
    storage.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert report is not None
    print(
        f"digest to {recipients:,} recipients, {report.stories} stories "
        f"(SQLite, {connections} SMTP connection{'s' if connections > 1 else ''})"
    )
    print(
        f"  sent and recorded    {report.sent:,} "
        f"({recorded:,} delivery rows, {received:,} received)"
    )
    print(f"  time                 {seconds:.1f} s (target: under 60 s)")
    print(f"  rate                 {report.sent / seconds:,.0f} messages/s")
    print(f"  message size         {size / max(received, 1) / 1024:.1f} KiB on average")
    print(f"  sender peak memory   {peak:.0f} MiB RSS")
    print(f"  target met           {'yes' if seconds < 60 and received == recipients else 'NO'}")


if __name__ == "__main__":
    main()
