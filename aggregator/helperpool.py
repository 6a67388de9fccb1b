"""Helper processes over plain pipes: a pool of Python processes, each running one function on
the work it is sent, one piece at a time, and sending back the result.

concurrent.futures' ProcessPoolExecutor did this job, but with the spawn start method its queues'
semaphores start multiprocessing's resource tracker, one more Python process (13 MiB resident, 7
MiB of it its own) to clean up named semaphores if the poller is killed. This pool has none to
clean up: each helper has its own pair of pipes, and two threads in the parent, one sending it
work from the pool's one queue, one reading its answers. A helper lives as long as its pipe: it
ignores SIGINT and SIGTERM (the poller decides when it stops, and a Ctrl-C at the terminal reaches
the whole process group) and ends when the parent closes its end or dies.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from aggregator.helper import frame, named, read, send, write

log = logging.getLogger(__name__)

# What a helper runs first: the parent's import path (so the project imports as it does in the
# parent), then the helper's loop on the pipes named on its command line.
_BOOT = (
    "import json, os, sys; "
    "sys.path[:] = json.loads(os.environ.pop('AGGREGATOR_HELPER_PATH')); "
    "from aggregator.helper import serve; "
    "serve(int(sys.argv[1]), int(sys.argv[2]))"
)  # (one line: it is what `ps` shows of a helper)

_STOP = None  # what tells a sending thread to close its helper's pipe


def _widen(fds: tuple[int, ...], size: int) -> None:
    try:
        import fcntl
    except ImportError:  # not on a POSIX system
        return
    setting = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setting is None:  # not on Linux
        return
    for fd in fds:
        with contextlib.suppress(OSError):  # above the user's allowance: the default stays
            fcntl.fcntl(fd, setting, size)


DEPTH = 4  # pieces of work sent to a helper ahead of its answers


class _Helper:
    """One helper process, its pipes, and the two threads that feed it and read its answers.

    Up to DEPTH pieces of work are in its pipe at once, answered in order: with one at a time,
    the helper waited, after each answer, for the parent's busy interpreter to read it and send
    the next (a first pass of 1,000 sources took 5.2-5.6 s against 3.9-4.3)."""

    def __init__(
        self,
        pool: HelperPool,
        start: str,
        work: str,
        args: tuple[Any, ...],
        pipe_bytes: int,
        stamp: tuple[str, object],
    ) -> None:
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()
        if pipe_bytes:
            _widen((self._out, self._in), pipe_bytes)
        # the interpreter's own flags (-B, -X ...), as multiprocessing passes them on
        flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags", list)()
        try:
            self.process = subprocess.Popen(
                [sys.executable, *flags, "-c", _BOOT, str(to_child), str(from_child)],
                stdin=subprocess.DEVNULL,
                pass_fds=(to_child, from_child),
                env={**os.environ, "AGGREGATOR_HELPER_PATH": json.dumps(sys.path)},
            )
        except BaseException:
            for fd in (self._out, self._in):
                os.close(fd)
            raise
        finally:
            os.close(to_child)
            os.close(from_child)
        self.pipes = (self._out, self._in)
        self.writer = io.FileIO(self._out, "wb")
        self.reader = io.FileIO(self._in, "rb")
        self._pool = pool
        self._sent: deque[Future[Any]] = deque()  # answered in this order
        self._lock = threading.Lock()
        self._dead = False  # the helper ended: nothing more is sent to it
        self._room = threading.Semaphore(DEPTH)
        self._stopping = False
        try:
            send(self.writer, stamp)
            send(self.writer, (start, work, args))
        except BaseException:  # it ended at once (or the arguments do not pickle)
            self.process.kill()
            self.process.wait()
            self.writer.close()
            self.reader.close()
            raise
        self.sender = threading.Thread(target=self._send, name="helper-sender", daemon=True)
        self.receiver = threading.Thread(target=self._receive, name="helper-reader", daemon=True)
        self.sender.start()
        self.receiver.start()

    def _send(self) -> None:
        jobs = self._pool.jobs
        try:
            while True:
                self._room.acquire()
                job = jobs.get()
                if job is _STOP:
                    return
                future, args = job
                if not future.set_running_or_notify_cancel():
                    self._room.release()
                    continue
                try:
                    framed = frame(args)
                except Exception as exc:  # arguments that do not pickle: this piece fails alone
                    future.set_exception(exc)
                    self._room.release()
                    continue
                with self._lock:  # the reader fails what was sent when the helper dies
                    if self._dead:
                        future.set_exception(BrokenProcessPool("a helper process ended"))
                        return
                    self._sent.append(future)
                try:
                    write(self.writer, framed)
                except OSError:  # the helper died: its reader fails what was sent
                    return
        finally:
            self._stopping = True
            with contextlib.suppress(OSError):
                self.writer.close()  # the helper answers what it has, then ends

    def _receive(self) -> None:
        try:
            while True:
                try:
                    data = read(self.reader)
                except (EOFError, OSError) as exc:
                    with self._lock:
                        self._dead = True
                        sent, self._sent = list(self._sent), deque()
                    if sent or not self._stopping:  # it ended with work in hand
                        broken = BrokenProcessPool(f"a helper process ended: {exc!r}")
                        for future in sent:
                            future.set_exception(broken)
                        self._pool.break_down()
                    return
                try:
                    ok, value = pickle.loads(data)
                except Exception as exc:  # read whole, so the next answer is where it should be
                    ok, value = False, RuntimeError(f"the helper's answer did not load: {exc!r}")
                with self._lock:
                    future = self._sent.popleft()
                self._room.release()
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        finally:
            with contextlib.suppress(OSError):
                self.reader.close()
            self._wait()

    def _wait(self) -> None:
        """Wait for the process (it ends when its pipe closes)."""
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # (it ignores SIGTERM: this one is stuck)
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """End the process now; its threads see it end."""
        with contextlib.suppress(OSError):
            self.process.kill()
        for _ in range(DEPTH):
            self._room.release()  # a sender waiting for room goes on to its stop


class HelperPool:
    """`size` helper processes, each started with `start(*args)` and then running `work` on each
    piece of work submitted, with the interface of the part of ProcessPoolExecutor the poller
    used: `submit` gives a Future, which raises BrokenProcessPool if its helper died (the pool
    is then broken: every waiting piece of work gets the same, and so does every later submit).

    `start` and `work` are named "module:function" (the helper imports them). `pipe_bytes`
    widens each pipe to hold that much where Linux allows it (F_SETPIPE_SZ; else the default
    stays): a piece of work or an answer larger than a pipe holds waits for the other side.
    `stamp`, a "module:function" too, says which code a process runs: a helper whose stamp
    differs from the parent's ends at once, before reading its start's arguments (the pool is
    then broken at its first piece of work).
    """

    def __init__(
        self,
        size: int,
        start: str,
        work: str,
        args: tuple[Any, ...] = (),
        *,
        pipe_bytes: int = 0,
        stamp: str = "",
    ) -> None:
        self.jobs: queue.SimpleQueue[tuple[Future[Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._broken = False
        self._closed = False
        self.helpers: list[_Helper] = []
        stamped = (stamp, named(stamp)() if stamp else None)
        try:
            for _ in range(size):
                self.helpers.append(_Helper(self, start, work, args, pipe_bytes, stamped))
        except BaseException:
            self.shutdown(wait=False, cancel_futures=True)
            raise

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [helper.process for helper in self.helpers]

    def pipes(self) -> list[int]:
        """The parent's ends of every helper's pipes: work out, answers back."""
        return [fd for helper in self.helpers for fd in helper.pipes]

    def submit(self, *args: Any) -> Future[Any]:
        with self._lock:
            if self._broken:
                raise BrokenProcessPool("a helper process ended")
            if self._closed:
                raise RuntimeError("the helper pool is shut down")
            future: Future[Any] = Future()
            self.jobs.put((future, args))
            return future

    def break_down(self) -> None:
        """A helper died: end the others and fail whatever waits."""
        with self._lock:
            if self._broken:
                return
            self._broken = True
        self._drain(BrokenProcessPool("a helper process ended"))
        for _ in self.helpers:
            self.jobs.put(_STOP)
        for helper in self.helpers:
            helper.kill()

    def _drain(self, error: BaseException | None) -> None:
        """Take every waiting piece of work off the queue: cancelled, or failed with `error`."""
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if job is _STOP:
                continue
            future, _ = job
            if error is None:
                future.cancel()
            elif future.set_running_or_notify_cancel():
                future.set_exception(error)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; the helpers finish what was submitted (unless `cancel_futures`)
        and end. With `wait`, return when they have."""
        with self._lock:
            self._closed = True
        if cancel_futures:
            self._drain(None)
        for _ in self.helpers:
            self.jobs.put(_STOP)
        if wait:
            for helper in self.helpers:
                helper.sender.join()
                helper.receiver.join()
