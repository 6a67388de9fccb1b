"""The helper processes' pool (aggregator/helperpool.py): real processes over real pipes, doing
standard-library work ("module:function"), so what is tested is the pool, not the parsing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from aggregator.helperpool import DEPTH, HelperPool


def _pool(size: int, work: str) -> HelperPool:
    return HelperPool(size, "time:sleep", work, (0,))


def _gone(pid: int, seconds: float = 10.0) -> bool:
    """Whether the process `pid` ended (and was reaped) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):  # gone while being read
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # ended, its parent not told yet
            return True
        time.sleep(0.05)
    return False


def test_every_piece_of_work_gets_its_own_answer() -> None:
    pool = _pool(2, "operator:mul")
    try:
        futures = [pool.submit(n, 3) for n in range(50)]
        assert [f.result(timeout=30) for f in futures] == [n * 3 for n in range(50)]
    finally:
        pool.shutdown()
    assert all(process.returncode == 0 for process in pool.processes)


def test_an_error_reaches_its_caller_and_the_helper_goes_on() -> None:
    pool = _pool(1, "operator:truediv")
    try:
        failed = pool.submit(1, 0)
        with pytest.raises(ZeroDivisionError):
            failed.result(timeout=30)
        assert pool.submit(6, 3).result(timeout=30) == 2
    finally:
        pool.shutdown()


def test_an_answer_that_does_not_pickle_is_an_error_not_a_dead_helper() -> None:
    pool = _pool(1, "threading:Lock")
    try:
        with pytest.raises(RuntimeError, match="could not send its answer"):
            pool.submit().result(timeout=30)
        with pytest.raises(RuntimeError, match="could not send its answer"):
            pool.submit().result(timeout=30)  # the same helper, still there
        assert pool.processes[0].poll() is None
    finally:
        pool.shutdown()


def test_arguments_that_do_not_pickle_fail_their_own_piece_alone() -> None:
    pool = _pool(1, "operator:add")
    try:
        with pytest.raises(TypeError):
            pool.submit(threading.Lock(), 1).result(timeout=30)
        assert pool.submit(1, 2).result(timeout=30) == 3
    finally:
        pool.shutdown()


# An answer the helper can pickle but the parent cannot load: an object of a class that only the
# helper's __main__ has.
_ONLY_THERE = (
    "exec('class Only: pass', vars(__import__('__main__'))) or __import__('__main__').Only()"
)


def test_an_answer_the_parent_cannot_load_fails_its_own_piece_alone() -> None:
    pool = _pool(1, "builtins:eval")
    try:
        with pytest.raises(RuntimeError, match="did not load"):
            pool.submit(_ONLY_THERE).result(timeout=30)
        assert pool.submit("6 * 7").result(timeout=30) == 42
    finally:
        pool.shutdown()


def test_a_helper_that_dies_fails_what_waits_and_breaks_the_pool() -> None:
    """Every piece of work ends, done or broken, however the death falls among the threads
    sending and reading (none is left waiting for an answer that cannot come)."""
    pool = _pool(2, "time:sleep")
    try:
        waiting = [pool.submit(0.05) for _ in range(60)]
        time.sleep(0.12)
        os.kill(pool.processes[0].pid, signal.SIGKILL)
        outcomes = []
        for future in waiting:
            try:
                future.result(timeout=30)
                outcomes.append("done")
            except BrokenProcessPool:
                outcomes.append("broken")
        assert "broken" in outcomes
        with pytest.raises(BrokenProcessPool):
            pool.submit(0)
        for process in pool.processes:
            assert _gone(process.pid)  # the other helper is ended too
    finally:
        pool.shutdown()


def test_shutting_down_cancels_what_was_not_sent_and_ends_the_helpers() -> None:
    pool = _pool(1, "time:sleep")
    futures = [pool.submit(0.2) for _ in range(DEPTH + 5)]
    time.sleep(0.1)  # the first DEPTH are in the helper's pipe
    pool.shutdown(wait=True, cancel_futures=True)
    cancelled = 0
    for future in futures:
        try:
            future.result(timeout=0)
        except CancelledError:
            cancelled += 1
    assert cancelled >= 5
    assert futures[0].done() and not futures[0].cancelled()
    assert pool.processes[0].returncode == 0
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(0)


def test_ctrl_c_at_the_terminal_does_not_kill_a_helper() -> None:
    """The poller decides when its helpers stop: SIGINT and SIGTERM reach the whole process
    group, and the helper finishes its work and keeps taking more."""
    pool = _pool(1, "operator:add")
    try:
        assert pool.submit(1, 1).result(timeout=30) == 2  # started: its handlers are set
        for number in (signal.SIGINT, signal.SIGTERM):
            os.kill(pool.processes[0].pid, number)
        time.sleep(0.2)
        assert pool.submit(2, 2).result(timeout=30) == 4
        assert pool.processes[0].poll() is None
    finally:
        pool.shutdown()


_PARENT = """
import os, sys
from aggregator.helperpool import HelperPool
pool = HelperPool(2, "time:sleep", "operator:add", (0,))
assert pool.submit(1, 2).result(timeout=30) == 3
children = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                line = cmdline.read().replace(b"\\0", b" ").decode()
        except OSError:
            continue
        if parent == os.getpid():
            children.append(entry + " " + line)
print("\\n".join(children), flush=True)
os._exit(0)  # dies without shutting its pool down
"""


def test_no_other_process_is_started_and_helpers_end_with_their_parent() -> None:
    """Only the helpers themselves (no multiprocessing resource tracker), and a parent that dies
    without a word leaves none behind: each ends when its pipe closes."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PARENT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    children = done.stdout.strip().splitlines()
    assert len(children) == 2, children
    assert all("aggregator.helper import serve" in line for line in children), children
    assert not any("resource_tracker" in line for line in children)
    for line in children:
        assert _gone(int(line.split()[0]))


def test_a_helper_running_other_code_than_its_parent_ends_before_reading_anything() -> None:
    """The stamp stands for the code a process runs (the project's code hash in the poller);
    here each process's pid, which always differs: the helper must refuse, and say why."""
    pool = HelperPool(1, "time:sleep", "operator:add", (0,), stamp="os:getpid")
    try:
        with pytest.raises(BrokenProcessPool):
            pool.submit(1, 2).result(timeout=30)
        assert _gone(pool.processes[0].pid)
    finally:
        pool.shutdown()
