"""The long-running service: open storage, apply the config, poll on ticks until told to stop.

Signals are turned into one stop event; everything started here is stopped in reverse order:
the poller stops claiming, fetches in flight finish and are stored, then the scheduler and the
database close, so SIGTERM or Ctrl-C leaves no half-written state and no stranded lease.
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
from aggregator.fetch import Fetcher
from aggregator.poll import Poller, make_fetcher
from aggregator.scheduling import Ticker
from aggregator.storage import Storage

log = logging.getLogger("aggregator")

POLL_TICK = timedelta(seconds=5)
PRUNE_TICK = timedelta(hours=1)


@dataclass(frozen=True)
class Started:
    """What `start` brought up, for `stop` to take down."""

    config: Config
    storage: Storage
    fetcher: Fetcher
    poller: Poller
    ticker: Ticker


def start(config_path: Path, role: str = "run") -> Started:
    """Load and apply the config, migrate the database, start polling on ticks."""
    config = load_config(config_path)
    storage = Storage.open(config.storage.url)
    report = storage.sync_sources(config.sources)
    log.info(
        "aggregator %s (%s): %d sources (%d new, %d changed, %d removed), %d outputs, "
        "%d digests; database %s (schema %s)",
        __version__,
        role,
        len(config.sources),
        len(report.added),
        len(report.changed),
        len(report.removed),
        len(config.outputs),
        len(config.digests),
        storage.url,
        storage.schema_revision(),
    )
    fetcher = make_fetcher(config)
    poller = Poller(storage, config, fetcher)
    ticker = Ticker()
    ticker.every(POLL_TICK, "poll", poller.run_once)
    ticker.every(PRUNE_TICK, "prune", lambda: _prune(storage, config))
    ticker.start()
    return Started(config, storage, fetcher, poller, ticker)


def _prune(storage: Storage, config: Config) -> None:
    removed = storage.prune_items(config.polling.retention)
    if removed:
        log.info("retention: removed %d items not seen for %s", removed, config.polling.retention)


def stop(started: Started) -> None:
    started.poller.stop()
    started.ticker.shutdown(wait=True)
    started.fetcher.close()
    started.storage.close()


def run_forever(
    config_path: Path, role: str = "run", stop_event: threading.Event | None = None
) -> None:
    """Run until SIGTERM/SIGINT (or `stop_event`, for embedding and tests)."""
    stop_event = stop_event or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop_event.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    started = start(config_path, role)
    log.info("ready")
    try:
        stop_event.wait()
    finally:
        stop(started)
        log.info("stopped")
