"""Three `aggregator worker` processes share 300 sources on real PostgreSQL.

Every source is polled, none twice within its interval, and a worker killed with SIGKILL in the
middle of a poll loses no item and duplicates none: its leases lapse and others take over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aggregator.storage import Storage
from tests.conftest import _reset_postgres
from tests.feedserver import FeedServer, Reply, Request
from tests.support import rss

SOURCES = 300
ITEMS = 3
INTERVAL = 60  # seconds: longer than the test, so any second fetch would be a double


def _start_worker(config: Path, database: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["AGGREGATOR_DATABASE_URL"] = database
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--log-level", "WARNING", "worker", "-c", str(config)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.postgres
def test_three_workers_share_sources_and_survive_a_kill(tmp_path: Path, postgres_url: str) -> None:
    _reset_postgres(postgres_url)
    with FeedServer() as server:

        def feed(request: Request) -> Reply:
            name = request.path.strip("/").removesuffix(".xml")
            time.sleep(0.02)  # slow enough that a worker is caught mid-poll
            return Reply(200, rss(name, ITEMS), {"Content-Type": "application/rss+xml"})

        lines = []
        for i in range(SOURCES):
            server.routes[f"/s{i:03d}.xml"] = feed
            lines.append(
                f"  - {{id: s{i:03d}, url: '{server.url(f'/s{i:03d}.xml')}', "
                f"section: world, interval: {INTERVAL}s}}\n"
            )
        config = tmp_path / "feeds.yaml"
        config.write_text(
            "sections: [{id: world, title: World}]\nsources:\n"
            + "".join(lines)
            + "polling: {timeout: 2s, host_gap: 0s, per_host: 32, concurrency: 4}\n"
        )
        workers = [_start_worker(config, postgres_url, tmp_path) for _ in range(3)]
        victim = workers[0]
        try:
            deadline = time.monotonic() + 30
            while len(server.log) < SOURCES // 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            with engine.connect() as conn:  # what it held when it died
                stranded = set(
                    conn.execute(
                        text("SELECT id FROM sources WHERE lease_owner LIKE :pid"),
                        {"pid": f"%:{victim.pid}:%"},
                    ).scalars()
                )
            engine.dispose()
            assert stranded, "the worker was killed between polls; the test proves nothing"

            store = Storage.open(postgres_url, upgrade=False)
            deadline = time.monotonic() + 90  # the dead worker's leases lapse after 16 s
            while time.monotonic() < deadline:
                polled = {s.id for s in store.sources() if s.last_success_at}
                if len(polled) == SOURCES:
                    break
                time.sleep(0.5)
            alive = [w.poll() is None for w in workers[1:]]
            assert len(polled) == SOURCES, f"{len(polled)} polled; workers alive: {alive}"
            assert store.count_items() == SOURCES * ITEMS  # nothing lost, nothing twice
            counts = store.item_counts()
            assert all(c.stored == ITEMS for c in counts.values())
            store.close()
        finally:
            for worker in workers[1:]:
                worker.send_signal(signal.SIGTERM)
            codes = [worker.wait(timeout=30) for worker in workers[1:]]
        assert codes == [0, 0], [w.stderr.read() if w.stderr else b"" for w in workers[1:]]

        fetched: dict[str, list[float]] = {}
        for entry in server.log:
            fetched.setdefault(entry.path.strip("/").removesuffix(".xml"), []).append(entry.at)
        assert len(fetched) == SOURCES
        twice = {sid: len(times) for sid, times in fetched.items() if len(times) > 1}
        # only a source the dead worker held may be fetched again, once its lease lapsed
        assert set(twice) <= stranded, twice
        assert all(n == 2 for n in twice.values())
