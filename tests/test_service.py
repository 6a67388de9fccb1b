"""`aggregator run` as a newcomer starts it: a real process that stays up and stops cleanly."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aggregator.storage import Storage
from tests.conftest import ROOT

EXAMPLE = ROOT / "config" / "feeds.yaml"


class Running:
    """A service process whose log lines are read in the background."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_starts_stays_up_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "feeds.yaml").write_text(EXAMPLE.read_text(encoding="utf-8"))
    service = Running(["run"], cwd=tmp_path)
    try:
        started = service.wait_for("aggregator 0.")
        assert "11 sources (11 new, 0 changed, 0 removed), 3 outputs, 2 digests" in started
        service.wait_for("ready")
        service.wait_for("tick:")  # the scheduler is ticking
        assert service.process.poll() is None
        # the embedded default: SQLite at data/aggregator.db under the working directory
        store = Storage.open(f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}", upgrade=False)
        assert len(store.sources()) == 11
        store.close()
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
