"""`aggregator run` as a newcomer starts it: a real process that stays up and stops cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from aggregator.storage import Storage
from tests.conftest import ROOT
from tests.feedserver import FeedServer, feed_file
from tests.support import rss

EXAMPLE = ROOT / "config" / "feeds.yaml"


class Running:
    """A service process whose log lines are read in the background."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")} | (env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first line logged so far or within `timeout` that contains `text`."""
        for line in self.seen:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not logged; got:\n" + "\n".join(self.seen))

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def local_config(server: FeedServer, path: Path, count: int = 3, port: int | None = None) -> int:
    """A config polling `count` feeds of `server`, serving on a free port (returned)."""
    port = port or free_port()
    sources = "".join(
        f"  - {{id: feed-{i}, url: '{server.url(f'/feed-{i}.xml')}', section: world}}\n"
        for i in range(count)
    )
    path.write_text(
        f"sections: [{{id: world, title: World}}]\nsources:\n{sources}polling: {{host_gap: 0s}}\n"
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        "outputs: [{id: all, title: All, filter: {every_item: true}}]\n"
    )
    return port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_polls_stays_up_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    with FeedServer() as server:
        for i in range(3):
            server.routes[f"/feed-{i}.xml"] = feed_file(rss(f"feed-{i}", 5), etag=f'"{i}"')
        (tmp_path / "config").mkdir()
        port = local_config(server, tmp_path / "config" / "feeds.yaml")
        service = Running(["run"], cwd=tmp_path)
        try:
            started = service.wait_for("aggregator 0.")
            assert "3 sources (3 new, 0 changed, 0 removed)" in started
            service.wait_for("ready")
            for i in range(3):
                service.wait_for(f"source feed-{i}: 200")
            assert service.process.poll() is None
            # the embedded default: SQLite at data/aggregator.db under the working directory
            store = Storage.open(f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}", upgrade=False)
            assert store.count_items() == 15
            store.close()
            # the same process serves what it polled
            deadline = time.monotonic() + 10
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/feeds/all.json") as r:
                    items = json.load(r)["items"]
                if len(items) == 15 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert len(items) == 15
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as r:
                assert json.load(r)["checks"] == {"database": "ok", "scheduler": "ok"}
        finally:
            code = service.stop(sig)
        assert code == 0
        service.wait_for("stopped")


def test_run_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "feeds.yaml"
    bad.write_text("sources:\n  - id: x\n")
    service = Running(["run", "--config", str(bad)], cwd=tmp_path)
    assert service.process.wait(timeout=60) == 2
    service.wait_for(f"{bad}:2:5: sources[0].url: required key 'url' is missing")
    assert not (tmp_path / "data").exists()
