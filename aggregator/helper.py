"""What runs in a helper process (helperpool.py starts them): pieces of work read from one pipe
and their answers written to another, each a pickled message framed by its length.

Only light standard modules here, since a helper imports this before its work:
multiprocessing.connection, which framed the messages before, cost each helper 3-4 MiB of
modules it had no other use for.
"""

from __future__ import annotations

import importlib
import io
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("!Q")  # a message's length in bytes


def frame(message: object) -> bytes:
    """A message as it goes down a pipe: its length, then its pickle."""
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def write(pipe: io.FileIO, framed: bytes) -> None:
    """Write a framed message whole (raises OSError when the other end is gone)."""
    view = memoryview(framed)
    while view:
        written = pipe.write(view)
        if written is None:  # (only a non-blocking pipe answers so; these block)
            raise BlockingIOError("the pipe is full")
        view = view[written:]


def send(pipe: io.FileIO, message: object) -> None:
    write(pipe, frame(message))


def receive(pipe: io.FileIO) -> Any:
    """Read one message (raises EOFError when the other end closed its pipe)."""
    return pickle.loads(read(pipe))


def read(pipe: io.FileIO) -> bytearray:
    """One message's pickle, read whole (raises EOFError when the other end closed its pipe)."""
    (size,) = _HEADER.unpack(_read(pipe, _HEADER.size))
    return _read(pipe, size)


def _read(pipe: io.FileIO, size: int) -> bytearray:
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        count = pipe.readinto(view[got:])
        if not count:
            raise EOFError("the pipe closed")
        got += count
    return data


def named(name: str) -> Callable[..., Any]:
    """A function by its "module:name" (what crosses the pipe, rather than the function)."""
    module, _, attribute = name.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
    return found


def serve(reading: int, writing: int) -> None:
    """A helper's life: the start function, then the work function on each piece of work, until
    the parent closes the pipe. SIGINT and SIGTERM are ignored: the parent decides when its
    helpers stop (a Ctrl-C at the terminal reaches the whole process group)."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    with io.FileIO(reading, "rb") as reader, io.FileIO(writing, "wb") as writer:
        # Same code as the parent's, before anything of its is unpickled (the project upgraded
        # on the disk under a running service: an old object read by new code can go wrong in
        # silence; a frozen dataclass given slots reads an old one's fields as their names).
        check, expected = receive(reader)
        if check and named(check)() != expected:
            sys.stderr.write(
                "aggregator: a helper process runs other code than the process that started it "
                "(the project changed on the disk since): restart the service\n"
            )
            return
        start, work, args = receive(reader)
        named(start)(*args)
        function = named(work)
        while True:
            try:
                job = receive(reader)
            except EOFError:
                return
            try:
                answer: tuple[bool, Any] = (True, function(*job))
            except Exception as exc:
                answer = (False, exc)
            try:
                framed = frame(answer)
            except Exception as exc:  # a result, or an error, that does not pickle
                failed = RuntimeError(f"the helper could not send its answer: {exc!r}")
                framed = frame((False, failed))
            write(writer, framed)
