"""A command starts with the garbage collector off and runs with it on (aggregator/warmup.py):
checked in real processes, `python -m aggregator` as a user runs it, its work replaced by a probe
that records the collector's state."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from aggregator import warmup

PROBE = """
import gc, json, runpy, sys
import aggregator.poll, aggregator.service

seen = {}
def run_once(self, only=None, on_result=None):
    seen["poll"] = [gc.isenabled(), gc.get_freeze_count() > 0, gc.get_threshold()[0]]
    return []
def run_forever(path, role, listen=None):
    seen[role] = [gc.isenabled(), gc.get_freeze_count() > 0, gc.get_threshold()[0]]
aggregator.poll.Poller.run_once = run_once
aggregator.service.run_forever = run_forever
sys.argv = ["aggregator", *sys.argv[1:]]
try:
    runpy.run_module("aggregator", run_name="__main__")
finally:
    seen["after"] = [gc.isenabled()]
    print(json.dumps(seen))
"""


def _probe(tmp_path: Path, *args: str) -> dict[str, list[int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seen: dict[str, list[int]] = json.loads(done.stdout.splitlines()[-1])
    return seen


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        f"storage: {{url: 'sqlite:///{tmp_path / 'a.db'}'}}\n"
        "sections: [{id: world, title: World}]\n"
        "sources: [{id: wire, url: 'http://127.0.0.1:9/feed', section: world}]\n"
    )
    return path


def test_a_poll_runs_with_the_collector_on_and_start_up_frozen(tmp_path: Path) -> None:
    """On, with start-up frozen, and run every YOUNG new objects (not Python's 700)."""
    seen = _probe(tmp_path, "poll", "--once", "--config", str(_config(tmp_path)))
    assert seen["poll"] == [True, True, warmup.YOUNG]
    assert seen["after"] == [True]


def test_the_service_runs_with_the_collector_on(tmp_path: Path) -> None:
    seen = _probe(tmp_path, "run", "--config", str(_config(tmp_path)))
    assert seen["run"] == [True, True, warmup.YOUNG]


def test_a_command_that_fails_early_leaves_the_collector_on(tmp_path: Path) -> None:
    seen = _probe(tmp_path, "poll", "--config", str(tmp_path / "missing.yaml"))
    assert seen == {"after": [True]}
    assert _probe(tmp_path, "--version") == {"after": [True]}


def test_resume_undoes_only_its_own_pause() -> None:
    assert gc.isenabled()
    thresholds = gc.get_threshold()
    gc.disable()  # someone else's choice: left as it is
    try:
        warmup.pause()
        warmup.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()
    frozen = gc.get_freeze_count()
    warmup.pause()
    assert not gc.isenabled()
    warmup.resume()
    try:
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen
        warmup.resume()  # twice is once
        assert gc.isenabled()
        assert gc.get_threshold() == (warmup.YOUNG, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
