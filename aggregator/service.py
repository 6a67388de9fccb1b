"""The long-running service: open storage, apply the config, tick until told to stop.

Signals are turned into one stop event; everything started here is stopped in reverse order, so
SIGTERM or Ctrl-C leaves no half-written state.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType

from aggregator import __version__
from aggregator.config import Config, load_config
from aggregator.scheduling import Ticker
from aggregator.storage import Storage

log = logging.getLogger("aggregator")

TICK = timedelta(seconds=30)


@dataclass(frozen=True)
class Started:
    """What `start` brought up, for `stop` to take down."""

    config: Config
    storage: Storage
    ticker: Ticker


def start(config_path: Path) -> Started:
    """Load and apply the config, migrate the database, start the scheduler."""
    config = load_config(config_path)
    storage = Storage.open(config.storage.url)
    report = storage.sync_sources(config.sources)
    log.info(
        "aggregator %s: %d sources (%d new, %d changed, %d removed), %d outputs, %d digests; "
        "database %s (schema %s)",
        __version__,
        len(config.sources),
        len(report.added),
        len(report.changed),
        len(report.removed),
        len(config.outputs),
        len(config.digests),
        storage.url,
        storage.schema_revision(),
    )
    ticker = Ticker()
    ticker.every(TICK, "status", lambda: _status(storage))
    ticker.start()
    return Started(config, storage, ticker)


def _status(storage: Storage) -> None:
    states = storage.sources()
    enabled = [s for s in states if s.enabled and s.in_config and s.gone_at is None]
    log.info("tick: %d sources enabled; fetching is not part of this version yet", len(enabled))


def stop(started: Started) -> None:
    started.ticker.shutdown(wait=True)
    started.storage.close()


def run_forever(config_path: Path, stop_event: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop_event`, for embedding and tests)."""
    stop_event = stop_event or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop_event.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    started = start(config_path)
    log.info("ready")
    try:
        stop_event.wait()
    finally:
        stop(started)
        log.info("stopped")
