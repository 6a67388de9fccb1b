"""The long-running service: `run` (everything in one process), `worker` (polling and digests)
or `web` (feeds, pages, the status page).

Signals are turned into one stop: the web server stops taking requests, the poller stops
claiming, fetches in flight finish and are stored, claimed sources not yet started are released,
then the scheduler and the database close, so SIGTERM or Ctrl-C leaves no half-written state and
no stranded lease. SIGHUP, or saving feeds.yaml, reloads the config without a restart; an invalid
file is reported and the running config stays.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import FrameType

from aggregator import __version__
from aggregator.config import Config, load_config
from aggregator.digest.dispatch import Dispatcher, signer_for
from aggregator.digest.send import Mailer
from aggregator.digest.subscriptions import Subscriptions
from aggregator.exceptions import ConfigError, StorageError
from aggregator.feed.fetch import Fetcher, FetchResult
from aggregator.metrics import Metrics
from aggregator.poll import Poller, make_fetcher, worker_id
from aggregator.publish.publisher import Publisher
from aggregator.publish.websub import Announcer
from aggregator.scheduling import Ticker
from aggregator.search import index as search_index
from aggregator.status import StatusAccess, StatusBoard
from aggregator.storage import Storage, utcnow
from aggregator.tokens import Signer
from aggregator.web import WebServer, create_app, create_ops_app

log = logging.getLogger("aggregator")

POLL_TICK = timedelta(seconds=5)
PRUNE_TICK = timedelta(hours=1)
WEBSUB_TICK = timedelta(seconds=10)
DIGEST_TICK = timedelta(seconds=30)
SEARCH_TICK = timedelta(seconds=5)  # new items become searchable within a few seconds
CONFIG_TICK = timedelta(seconds=2)  # a stat() of feeds.yaml: cheap enough to do often
ROLES = ("run", "worker", "web")


@dataclass(frozen=True)
class Listen:
    """Where to listen, from the command line or environment; None: from the config."""

    host: str | None = None
    port: int | None = None


def _fetcher_settings(config: Config) -> tuple[object, ...]:
    p = config.polling
    return (p.timeout, p.max_size, p.max_redirects, p.per_host, p.host_gap, p.concurrency)


class ConfigFile:
    """Tells when feeds.yaml changed: its stat first (cheap), then its bytes (so a `touch` or
    an editor saving the same text reloads nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stat = self._read_stat()
        self._digest = self._read_digest()

    def _read_stat(self) -> tuple[int, int, int] | None:
        try:  # follows symlinks: a Kubernetes ConfigMap swaps a symlink to a new file
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read_digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def changed(self) -> bool:
        """True when the text differs from the last one `seen`; a touch only refreshes the stat."""
        stat = self._read_stat()
        if stat == self._stat:
            return False
        digest = self._read_digest()
        if digest is None or digest == self._digest:
            self._stat = stat
            return False
        return True

    def state(self) -> tuple[tuple[int, int, int] | None, str | None]:
        """The file as it is now, to mark `seen` once dealt with."""
        return self._read_stat(), self._read_digest()

    def seen(self, state: tuple[tuple[int, int, int] | None, str | None] | None = None) -> None:
        """The file as it was in `state` (taken before reading it; by default as it is now)
        was dealt with (applied, or refused as invalid): not a change now. Marking the state
        read before the reload, not the file after it, keeps a save made during the reload
        a change. Not called when a reload failed otherwise (the database away), so it is
        tried again."""
        self._stat, self._digest = state if state is not None else self.state()


class Service:
    """One process's parts, built from the config and rebuilt in place by `reload`."""

    def __init__(self, config_path: Path, role: str = "run", listen: Listen | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.path = config_path
        self.role = role
        self.file = ConfigFile(config_path)
        access = StatusAccess.from_environment()  # before anything opens: a mistake stops here
        self._listen = listen or Listen()
        self.config = self._load()
        self.storage = Storage.open(self.config.storage.url)
        report = self.storage.sync_sources(self.config.sources)
        log.info(
            "aggregator %s (%s): %d sources (%d new, %d changed, %d removed), %d outputs, "
            "%d digests; database %s (schema %s)",
            __version__,
            role,
            len(self.config.sources),
            len(report.added),
            len(report.changed),
            len(report.removed),
            len(self.config.outputs),
            len(self.config.digests),
            self.storage.url,
            self.storage.schema_revision(),
        )
        self.polls = role in ("run", "worker")
        self.owner = worker_id()
        self.metrics = Metrics(queue_lag=self.storage.queue_lag)
        self._reload_asked = threading.Event()
        self._lock = threading.Lock()  # one reload at a time
        self._retired: list[Fetcher] = []
        self.ticker = Ticker()
        self.fetcher: Fetcher | None = None
        self.poller: Poller | None = None
        self.dispatcher: Dispatcher | None = None
        self.announcer: Announcer | None = None
        self.publisher: Publisher | None = None
        self.subscriptions: Subscriptions | None = None
        self.web: WebServer | None = None
        signer = self._signer()
        if self.polls:
            self.fetcher = make_fetcher(self.config)
            self.poller = Poller(
                self.storage,
                self.config,
                self.fetcher,
                owner=self.owner,
                observe=self.metrics.fetched,
            )
            if signer is not None:
                self.dispatcher = Dispatcher(
                    self.storage, self.config, signer, self._mailer, self.owner
                )
            self.ticker.every(POLL_TICK, "poll", self._poll)
            self.ticker.every(PRUNE_TICK, "prune", self._prune)
            self.ticker.every(DIGEST_TICK, "digests", self._send_digests)
            self.ticker.every(WEBSUB_TICK, "websub", self._announce)
        self.ticker.every(CONFIG_TICK, "config", self._watch_config)
        if role in ("run", "web"):
            # where searches are answered, the index is kept: `poll --once` from cron with
            # `web` alone still gets a current search
            self.ticker.every(SEARCH_TICK, "search index", self._index)
            self.publisher = Publisher(self.storage, self.config)
            if signer is not None:  # made even with no digests yet: a reload may add some
                self.subscriptions = Subscriptions(
                    self.storage, self.config, signer, self._mailer, utcnow
                )
            polling = self.ticker if self.polls else None
            board = StatusBoard(self.storage, lambda: self.config, self.publisher)
            app = create_app(
                self.publisher,
                subscriptions=self.subscriptions,
                scheduler_running=(lambda: polling.running) if polling is not None else None,
                metrics=self.metrics,
                status=board,
                access=access,
            )
            self.web = WebServer(app, self.config.server.host, self.config.server.port)
            log.info("serving feeds at %s", self.publisher.base)
        elif self._listen.port is not None:  # a worker's probes and metrics
            app = create_ops_app(
                self.storage.revision,
                scheduler_running=lambda: self.ticker.running,
                metrics=self.metrics,
                access=access,
            )
            host = self._listen.host or self.config.server.host
            self.web = WebServer(app, host, self._listen.port)
            log.info("probes and metrics at http://%s:%d/", host, self.web.port)
        if self.web is not None and not access.protected:
            log.info("/status and /metrics are open: set AGGREGATOR_STATUS_TOKEN to protect them")

    def _load(self) -> Config:
        """The config; `--host`/`--port` replace `server.host`/`port` (and so the default
        base_url) for the processes that serve the site, not for a worker, whose port only
        answers probes: its e-mail links and WebSub pings must still name the site."""
        if self.role == "worker":
            return load_config(self.path, cached=True)
        return load_config(self.path, listen=(self._listen.host, self._listen.port), cached=True)

    def _signer(self) -> Signer | None:
        try:
            return signer_for(self.config)
        except ValueError as exc:
            if self.config.digests:
                log.error("digests are not sent and sign-up pages are off: %s", exc)
            return None

    def _mailer(self) -> Mailer:
        return Mailer(self.config.smtp)

    # -- ticks -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.ticker.start()

    def _poll(self) -> None:
        assert self.poller is not None
        # clients replaced by a reload: the fetches that used them ended with the last cycle
        while self._retired:
            self._retired.pop().close()
        self.poller.run_once()

    def _index(self) -> None:
        try:
            search_index.catch_up(self.storage)
        except StorageError as exc:  # busy or gone for a moment: the next tick tries again
            log.warning("search index: %s", exc)

    def _prune(self) -> None:
        retention = self.config.polling.retention
        removed = self.storage.prune_items(retention)
        if removed:
            log.info("retention: removed %d items not seen for %s", removed, retention)

    def _send_digests(self) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None or not self.config.digests:
            return
        for report in dispatcher.run_due(on_error=lambda _digest: self.metrics.digest_failed()):
            self.metrics.digest_run(report)

    def _announce(self) -> None:
        hub = self.config.publishing.hub
        if not hub or self.fetcher is None:
            self.announcer = None
            return
        if self.announcer is None or self.announcer.hub != hub:
            self.announcer = Announcer(Publisher(self.storage, self.config), hub, self._post)
        self.announcer.run_once()

    def _post(self, url: str, form: Mapping[str, str]) -> FetchResult:
        assert self.fetcher is not None  # the current client, after a reload too
        return self.fetcher.post_form(url, form)

    # -- reloading -------------------------------------------------------------------------------

    def ask_reload(self) -> None:
        """From a signal handler: only set a flag; the config tick does the work."""
        self._reload_asked.set()

    def _watch_config(self) -> None:
        asked = self._reload_asked.is_set()
        self._reload_asked.clear()
        before = self.file.state()  # what the reload will read, or older
        if self.file.changed():
            why = "feeds.yaml changed"
        elif asked:
            why = "SIGHUP"
        else:
            return
        try:
            self.reload(why)
        except Exception:
            log.exception("config not reloaded (%s); trying again shortly", why)
            return
        self.file.seen(before)

    def reload(self, why: str) -> bool:
        """Validate feeds.yaml again and apply it; False (and the running config kept) when it
        is invalid."""
        with self._lock:
            try:
                new = self._load()
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("config not reloaded: %s", problem)
                log.error(
                    "config not reloaded (%s): %d problems; still running the previous config",
                    why,
                    len(exc.problems),
                )
                return False
            old = self.config
            for what, before, after in (
                ("storage.url", old.storage.url, new.storage.url),
                ("server.host", old.server.host, new.server.host),
                ("server.port", old.server.port, new.server.port),
            ):
                if before != after:
                    log.warning("config: %s changed; it takes effect at the next restart", what)
            server = replace(new.server, host=old.server.host, port=old.server.port)
            new = replace(new, storage=old.storage, server=server)
            report = self.storage.sync_sources(new.sources)
            self.config = new
            self._apply(old, new)
            log.info(
                "config reloaded (%s): %d sources (%d added, %d changed, %d removed), "
                "%d outputs, %d digests",
                why,
                len(new.sources),
                len(report.added),
                len(report.changed),
                len(report.removed),
                len(new.outputs),
                len(new.digests),
                extra={
                    "event": "reload",
                    "added": list(report.added),
                    "changed": list(report.changed),
                    "removed": list(report.removed),
                },
            )
            return True

    def _apply(self, old: Config, new: Config) -> None:
        if self.poller is not None:
            if self.fetcher is not None and _fetcher_settings(old) != _fetcher_settings(new):
                # fetches in flight keep the old client; it is closed at the next cycle
                self._retired.append(self.fetcher)
                self.fetcher = make_fetcher(new)
                self.poller.fetcher = self.fetcher
            self.poller.configure(new)
        if self.dispatcher is not None:
            self.dispatcher.config = new
        elif self.polls and new.digests:
            signer = self._signer()
            if signer is not None:
                self.dispatcher = Dispatcher(self.storage, new, signer, self._mailer, self.owner)
        self.announcer = None  # made again, from the new config, at its next tick
        if self.publisher is not None:
            self.publisher.configure(new)
        if self.subscriptions is not None:
            self.subscriptions.configure(new)
        elif self.publisher is not None and new.digests:
            log.error("digest sign-up pages stay off until a restart with AGGREGATOR_SECRET set")

    # -- stopping --------------------------------------------------------------------------------

    def stop(self) -> None:
        if self.web is not None:
            self.web.stop()
        if self.poller is not None:
            self.poller.stop()
        self.ticker.shutdown(wait=True)
        if self.poller is not None:
            self.poller.close()  # after the ticker: no poll is running any more
        for fetcher in [*self._retired, self.fetcher]:
            if fetcher is not None:
                fetcher.close()
        if self.web is not None:
            self.web.close()
        self.storage.close()


def run_forever(
    config_path: Path,
    role: str = "run",
    stop_event: threading.Event | None = None,
    listen: Listen | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop_event`, for embedding and tests); SIGHUP reloads."""
    stop_event = stop_event or threading.Event()
    service: list[Service] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stop_event.is_set():
            log.info("received %s, stopping", signal.Signals(signum).name)
        stop_event.set()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        if service:
            service[0].ask_reload()

    # uvicorn takes these over while it serves, then puts ours back and raises the signal again
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    service.append(Service(config_path, role, listen))
    running = service[0]
    running.start()
    web = running.web
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
        running.stop()
        log.info("stopped")
