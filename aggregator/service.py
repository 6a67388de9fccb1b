"""The long-running service: `run` (everything in one process), `worker` (polling) or `web`.

Signals are turned into one stop: the web server stops taking requests, the poller stops
claiming, fetches in flight finish and are stored, then the scheduler and the database close,
so SIGTERM or Ctrl-C leaves no half-written state and no stranded lease.
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
from aggregator.digest.dispatch import Dispatcher, signer_for
from aggregator.digest.send import Mailer
from aggregator.digest.subscriptions import Subscriptions
from aggregator.fetch import Fetcher
from aggregator.poll import Poller, make_fetcher
from aggregator.publish.publisher import Publisher
from aggregator.publish.websub import Announcer
from aggregator.scheduling import Ticker
from aggregator.storage import Storage, utcnow
from aggregator.web import WebServer, create_app

log = logging.getLogger("aggregator")

POLL_TICK = timedelta(seconds=5)
PRUNE_TICK = timedelta(hours=1)
WEBSUB_TICK = timedelta(seconds=10)
DIGEST_TICK = timedelta(seconds=30)
ROLES = ("run", "worker", "web")


@dataclass(frozen=True)
class Started:
    """What `start` brought up, for `stop` to take down."""

    config: Config
    storage: Storage
    fetcher: Fetcher | None = None
    poller: Poller | None = None
    ticker: Ticker | None = None
    web: WebServer | None = None


def start(config_path: Path, role: str = "run") -> Started:
    """Load and apply the config, migrate the database, start polling on ticks and (for `run`
    and `web`) make the web server ready; its `run()` is the caller's to call."""
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
    fetcher = poller = ticker = web = None
    if role in ("run", "worker"):
        fetcher = make_fetcher(config)
        poller = Poller(storage, config, fetcher)
        ticker = Ticker()
        ticker.every(POLL_TICK, "poll", poller.run_once)
        ticker.every(PRUNE_TICK, "prune", lambda: _prune(storage, config))
        if config.digests:
            _schedule_digests(ticker, storage, config, poller.owner)
        hub = config.publishing.hub
        if hub:
            announcer = Announcer(Publisher(storage, config), hub, fetcher.post_form)
            ticker.every(WEBSUB_TICK, "websub", announcer.run_once)
        ticker.start()
    if role in ("run", "web"):
        publisher = Publisher(storage, config)
        subscriptions = None
        if config.digests:
            try:
                signer = signer_for(config)
            except ValueError as exc:
                log.error("digest sign-up pages are off: %s", exc)
            else:
                subscriptions = Subscriptions(
                    storage, config, signer, lambda: Mailer(config.smtp), utcnow
                )
        polling = ticker
        app = create_app(
            publisher,
            subscriptions=subscriptions,
            scheduler_running=(lambda: polling.running) if polling is not None else None,
        )
        web = WebServer(app, config.server.host, config.server.port)
        log.info("serving feeds at %s", publisher.base)
    return Started(config, storage, fetcher, poller, ticker, web)


def _schedule_digests(ticker: Ticker, storage: Storage, config: Config, owner: str) -> None:
    try:
        signer = signer_for(config)
    except ValueError as exc:
        log.error("digests are not sent: %s", exc)
        return
    dispatcher = Dispatcher(storage, config, signer, lambda: Mailer(config.smtp), owner)
    ticker.every(DIGEST_TICK, "digests", dispatcher.run_due)


def _prune(storage: Storage, config: Config) -> None:
    removed = storage.prune_items(config.polling.retention)
    if removed:
        log.info("retention: removed %d items not seen for %s", removed, config.polling.retention)


def stop(started: Started) -> None:
    if started.web is not None:
        started.web.stop()
    if started.poller is not None:
        started.poller.stop()
    if started.ticker is not None:
        started.ticker.shutdown(wait=True)
    if started.fetcher is not None:
        started.fetcher.close()
    started.storage.close()


def run_forever(
    config_path: Path, role: str = "run", stop_event: threading.Event | None = None
) -> None:
    """Run until SIGTERM/SIGINT (or `stop_event`, for embedding and tests)."""
    stop_event = stop_event or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stop_event.is_set():
            log.info("received %s, stopping", signal.Signals(signum).name)
        stop_event.set()

    # uvicorn takes these over while it serves, then puts ours back and raises the signal again
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    started = start(config_path, role)
    web = started.web
    try:
        log.info("ready")
        if web is not None:

            def stop_web() -> None:
                stop_event.wait()
                web.stop()

            threading.Thread(target=stop_web, name="stop-watch", daemon=True).start()
            web.run()  # serves in this thread until a signal or stop_event
            stop_event.set()
        else:
            stop_event.wait()
    finally:
        stop(started)
        log.info("stopped")
