"""Log set-up: readable lines for a terminal, or one JSON object per line for a log pipeline.

The JSON form is the standard library's `json` over the record: a dozen lines, so no library
is worth adding for it. Whatever a call passes in `extra=` (a fetch's source, status, duration
and new items) becomes fields of its own, so a pipeline can filter and sum without parsing text.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_QUIET = ("apscheduler", "alembic", "httpx", "httpcore", "uvicorn.error")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


_COLOURS = {logging.WARNING: "\x1b[33m", logging.ERROR: "\x1b[31m", logging.CRITICAL: "\x1b[31m"}


def _colourful(stream: TextIO) -> bool:
    """Colour on a terminal, none in a pipe or a file, nor where NO_COLOR is set."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


class _Console(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines on stderr that share it with a progress bar: while one is drawn, a line goes
    above it (the bar's line cleared, the record written, the bar drawn again), so the two never
    run into each other; warnings and errors in colour on a terminal."""

    def __init__(self, colour: bool) -> None:
        super().__init__(sys.stderr)
        self.colour = colour
        self.redraw: Callable[[], None] | None = None

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        start = _COLOURS.get(record.levelno) if self.colour else None
        return f"{start}{text}\x1b[0m" if start else text

    def emit(self, record: logging.LogRecord) -> None:
        redraw = self.redraw
        if redraw is not None:
            self.stream.write("\r\x1b[K")
        super().emit(record)
        if redraw is not None:
            redraw()


_console: _Console | None = None
_alone = threading.RLock()  # when no handler is set up, progress still updates under a lock


@contextmanager
def beneath_progress(redraw: Callable[[], None] | None) -> Iterator[threading.RLock]:
    """While a progress bar is drawn on stderr (`redraw` draws it; None when it is hidden, as in
    a pipe), log lines go above it. Gives the lock to update the bar under: threads log while
    the bar moves."""
    console = _console
    if console is None or console.lock is None:
        yield _alone
        return
    lock = console.lock
    with lock:
        console.redraw = redraw
    try:
        yield lock
    finally:
        with lock:
            console.redraw = None


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """The program's logging (cli.py calls it: the process is ours). Neither form writes where a
    call was made, nor its thread or process, so a record does not look them up: the logging
    HOWTO's "Optimization" settings, which took a fetch's line from 30 to 20 us (a poll logs one
    a source)."""
    global _console
    logging._srcfile = None  # (no caller's file, line and function to find)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _Console(colour=fmt != "json" and _colourful(sys.stderr))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    _console = handler
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if level.upper() != "DEBUG":  # their routine INFO lines drown ours
        for chatty in _QUIET:
            logging.getLogger(chatty).setLevel(logging.WARNING)
