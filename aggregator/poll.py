"""One poll cycle: claim due sources, fetch, parse, store; one source's failure is only its own.

The database is the coordinator: sources are claimed with a lease, so any number of pollers in any
number of processes share the work and none fetches a source another holds. Each source's outcome
(entries and health) is stored in one transaction, and only while the lease is still ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aggregator.config import Config, Source
from aggregator.exceptions import ParseError
from aggregator.feed import policy
from aggregator.feed.fetch import (
    Fetcher,
    FetchError,
    FetchRequest,
    FetchResult,
    status_text,
    user_agent,
)
from aggregator.feed.normalise import MAX_INDEXED_URL
from aggregator.prepare import Filed, Helpers, Prepared, helpers_for, prepare
from aggregator.process.pipeline import Processor
from aggregator.storage import Storage
from aggregator.types import ArticleFetch, Entry, FetchRecord, Filer, SaveReport, SourceState

if TYPE_CHECKING:
    from aggregator.feed import discover

log = logging.getLogger(__name__)


def lease_for(config: Config) -> timedelta:
    """How long a claim lasts: longer than a fetch can take (it is bounded by the timeout, plus
    the wait for a slot at its host), short enough that a dead worker's sources move on soon."""
    p = config.polling
    return p.timeout * 3 + p.host_gap * p.concurrency + timedelta(seconds=10)


@dataclass(frozen=True)
class PollResult:
    """What polling one source did, for the log, the `poll` table and tests."""

    source_id: str
    ok: bool
    status: int | None
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    error: str | None = None
    warning: str | None = None
    moved_to: str | None = None
    seconds: float = 0.0
    lost_lease: bool = False
    merged: int = 0  # new items that joined another item's story
    kind: str = ""  # for failures: timeout, too_large, network_error, http_error, parse_error...
    discovered: str | None = None  # the source's url is a web page; this is the feed it names
    articles: int = 0  # full_text: article pages fetched in this poll
    article_failures: int = 0  # of which could not be read


def _pid_space() -> str:
    """Which set of pids this process lives in (containers on one host have their own)."""
    try:
        return str(Path("/proc/self/ns/pid").stat().st_ino)
    except OSError:
        return "-"


def worker_id() -> str:
    """Names this process in leases: host, pid, pid namespace and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{_pid_space()}:{uuid.uuid4().hex[:6]}"


def is_dead(owner: str) -> bool:
    """True when a lease holder ran on this host and its process is gone (killed, crashed), so
    its work can be taken up at once instead of when the lease runs out."""
    parts = owner.split(":")
    if len(parts) != 4:
        return False
    host, pid_text, space, _ = parts
    if (
        host != socket.gethostname()
        or space != _pid_space()
        or space == "-"
        or not pid_text.isdigit()
        or int(pid_text) == os.getpid()
    ):
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def make_fetcher(config: Config | None) -> Fetcher:
    """A fetcher with the config's limits and politeness (the defaults' without one)."""
    from aggregator.config.schema import Polling

    p = config.polling if config is not None else Polling()
    return Fetcher(
        user_agent=user_agent(config.server.base_url if config is not None else None),
        timeout=p.timeout.total_seconds(),
        max_bytes=p.max_size,
        max_redirects=p.max_redirects,
        per_host=p.per_host,
        host_gap=p.host_gap.total_seconds(),
        connections=p.concurrency,
    )


_ERROR_KINDS = {
    FetchError.TIMEOUT: "timeout",
    FetchError.TOO_LARGE: "too_large",
    FetchError.REDIRECTS: "too_many_redirects",
    FetchError.INVALID_URL: "invalid_url",
}


# failures that often pass within minutes: retried from `polling.first_retry`
_TRANSIENT = (FetchError.NETWORK, FetchError.TIMEOUT)


def _plausible(moment: datetime | None, now: datetime) -> bool:
    """A date an article page gives that can stand for the item's: not before 1900, not ahead."""
    return moment is not None and datetime(1900, 1, 1, tzinfo=UTC) <= moment <= now + _AHEAD


_AHEAD = timedelta(hours=1)


def _refused_address(link: str, feed_url: str) -> str | None:
    """Why an article link is not fetched: its host is on a private, loopback or link-local
    network (a feed's links are the publisher's to choose, and what an article page holds is
    republished: a hostile feed must not make the service read its own network), unless the
    feed itself is served from that host. None when it may be fetched."""
    import ipaddress
    import socket

    try:
        host = urlsplit(link).hostname
        port = urlsplit(link).port
    except ValueError:
        return None  # the fetch says what is wrong with it
    if not host or host == urlsplit(feed_url).hostname:
        return None
    try:
        found = socket.getaddrinfo(host, port or 80, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None  # the fetch says the host does not resolve
    for *_, address in found:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        if not ip.is_global:
            return f"not fetched: {host} is a private or local network address ({ip})"
    return None


def _own_canonical(canonical: str | None, link: str | None) -> str | None:
    """An article page's canonical address, where it can stand for the article: on the link's
    own host, not the site's front page (a site that names its home page canonical on every
    page would otherwise join every article into one story), and short enough to index."""
    if not canonical or not link:
        return None
    page, own = urlsplit(canonical), urlsplit(link)
    if page.hostname != own.hostname or page.path in ("", "/"):
        return None
    return canonical if len(canonical.encode()) <= MAX_INDEXED_URL else None


def _fetch_error(fetched: FetchResult) -> tuple[str | None, str]:
    """What went wrong with a fetch that gave no document, and its kind ("" when nothing did)."""
    if fetched.error:
        return fetched.message, _ERROR_KINDS.get(fetched.error, "network_error")
    if not _is_document(fetched) and fetched.status != 304:
        return status_text(fetched.status or 0), "http_error"
    return None, ""


def _result(
    record: FetchRecord,
    fetched: FetchResult,
    saved: SaveReport | None,
    kind: str,
    articles: int = 0,
    article_failures: int = 0,
) -> PollResult:
    return PollResult(
        record.source_id,
        record.ok,
        fetched.status,
        new=len(saved.new) if saved else 0,
        updated=len(saved.updated) if saved else 0,
        unchanged=saved.unchanged if saved else 0,
        error=record.error,
        warning=record.warning,
        moved_to=record.permanent_url,
        seconds=fetched.seconds,
        lost_lease=saved is None,
        merged=saved.merged if saved else 0,
        kind="" if record.ok else kind,
        discovered=record.discovered_url,
        articles=articles,
        article_failures=article_failures,
    )


class _Outcomes:
    """Outcomes that store no items, written a batch at a time by one thread: an all-304 pass
    made a transaction and two hand-offs between threads per source. Whatever arrives while a
    batch is written goes in the next one."""

    def __init__(self, storage: Storage, thread: ThreadPoolExecutor) -> None:
        self._storage = storage
        self._thread = thread
        self._pending: list[tuple[FetchRecord, str | None, asyncio.Future[bool]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def record(self, record: FetchRecord, owner: str | None) -> bool:
        """Store an outcome; False when the lease was lost (nothing was written for it)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((record, owner, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write())
        return await done

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if len(self._pending) < _BATCH:  # a few milliseconds gather a fuller batch
                    await asyncio.sleep(_LINGER)
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                outcomes = [(record, owner) for record, owner, _ in batch]
                try:
                    held = await loop.run_in_executor(
                        self._thread, self._storage.record_fetches, outcomes
                    )
                except Exception as exc:
                    for *_, done in batch:
                        if not done.done():  # a cancelled waiter
                            done.set_exception(exc)
                else:
                    for (*_, done), kept in zip(batch, held, strict=True):
                        if not done.done():
                            done.set_result(kept)
        finally:
            self._writing = None


_BATCH = 64
# documents handed on to be stored, at most: what waits holds its entries. Measured at 1,000
# sources (four alternating runs each) and 10,000 (one): 8 waiting 8.6 s on average and 217-231
# MiB; 16 8.0 s and 232 MiB; 32 7.5 s but 243 MiB at 10,000 (the limit is 250 MB, 238 MiB)
_SAVING = 16
_LINGER = 0.005  # seconds


_Fetch = tuple[FetchRecord, list[Entry], str | None, Filer | None]


class _Saves:
    """Documents' entries and outcomes, written by one thread, each batch in one transaction:
    whatever arrives while a batch is written goes in the next. The loop hands them over as the
    helpers finish them, so no thread waits for a helper or for its turn to write (eight
    threads doing so spent a tenth of the poller's time holding the GIL in hand-offs)."""

    def __init__(self, poller: Poller, thread: ThreadPoolExecutor) -> None:
        self._poller = poller
        self._thread = thread
        self._pending: list[tuple[_Fetch, asyncio.Future[SaveReport | None]]] = []
        self._writing: asyncio.Task[None] | None = None
        self.waiting = 0  # documents handed on and not yet stored

    async def save(self, fetch: _Fetch) -> SaveReport | None:
        """Store a document's entries and outcome; None when the lease was lost."""
        done: asyncio.Future[SaveReport | None] = asyncio.get_running_loop().create_future()
        self._pending.append((fetch, done))
        self.waiting += 1
        if self._writing is None:
            self._writing = asyncio.create_task(self._write())
        try:
            return await done
        finally:
            self.waiting -= 1

    def _store(self, fetches: list[_Fetch]) -> list[SaveReport | Exception | None]:
        if any(entries for _, entries, _, _ in fetches):
            self._poller._warm_index()
        return self._poller.storage.save_fetches(fetches)

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    saved = await loop.run_in_executor(
                        self._thread, self._store, [fetch for fetch, _ in batch]
                    )
                except Exception as exc:
                    saved = [exc] * len(batch)
                for (_, done), outcome in zip(batch, saved, strict=True):
                    if done.done():  # a cancelled waiter
                        continue
                    if isinstance(outcome, Exception):
                        done.set_exception(outcome)
                    else:
                        done.set_result(outcome)
        finally:
            self._writing = None


def _request(state: SourceState, source: Source | None) -> FetchRequest:
    """A source's conditional GET."""
    headers = dict(source.headers) if source else {}
    return FetchRequest(state.fetch_url, state.etag, state.last_modified, headers)


def _is_document(fetched: FetchResult) -> bool:
    """A fetch that gave a body to read (a 2xx)."""
    return fetched.error is None and fetched.status is not None and 200 <= fetched.status < 300


class Poller:
    """Polls sources for one process; `stop()` makes a running cycle wind down."""

    def __init__(
        self,
        storage: Storage,
        config: Config,
        fetcher: Fetcher,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
        observe: Callable[[PollResult], None] | None = None,
    ) -> None:
        self.storage = storage
        self.fetcher = fetcher
        self.owner = owner or worker_id()
        self._observe = observe  # metrics: told of every fetch, whoever asked for it
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        # Parsing is pure CPU under the GIL: one thread at a time parses, while the others wait
        # on the network. Letting all of them parse at once was a third slower (GIL contention).
        self._parsing = threading.Lock()
        self._processor: Processor | None = None
        self._warming = threading.Lock()
        self._helpers = Helpers()
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take a new config (sources added, removed or changed) for the next sources polled."""
        self._config = config
        self._sources = {s.id: s for s in config.sources}
        self._lease = lease_for(config)
        if self._processor is None:
            self._processor = Processor(config)
        else:
            self._processor.configure(config)
        self._warm = False

    @property
    def processor(self) -> Processor:
        assert self._processor is not None
        return self._processor

    def _warm_index(self) -> None:
        """Fill a new story index from storage before the first items are linked, in a read
        transaction, rather than inside the first write; and only then: a poll where every
        feed answers 304 never needs it (loading 250,000 items' fingerprints takes seconds)."""
        if self._warm:
            return
        with self._warming:
            index = self.processor.index
            if not self._warm and index is not None:
                loaded = self.storage.warm_index(index)
                log.info("story index: %d recent items loaded", loaded)
            self._warm = True

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop the helper processes, if any were started."""
        self._helpers.close()

    def run_once(
        self,
        only: Sequence[str] | None = None,
        on_result: Callable[[PollResult], None] | None = None,
    ) -> list[PollResult]:
        """Poll every due source (or exactly `only`) once; return when nothing is left to do.

        Fetches run on the fetcher's event loop, `concurrency` at a time. Where helper
        processes run, a document goes to one from the loop and its entries on to one storing
        thread, which writes whatever waits in one transaction (`_Saves`); anything else that
        follows a fetch (reading in the poller, discovery, full text) runs in a pool of as many
        threads. Either way the next sources are fetched meanwhile: a source waiting to be
        stored holds no fetch's place (at most `_SAVING` of them wait).
        Sources are claimed ahead, in batches, so a claim costs one transaction per batch rather
        than per source; on stop, claimed sources not yet started are released at once for other
        workers.
        """
        fetcher = self.fetcher  # a reload may swap it meanwhile: this poll keeps its own
        return fetcher.run(self._run_once(fetcher, only, on_result))

    async def _run_once(
        self,
        fetcher: Fetcher,
        only: Sequence[str] | None,
        on_result: Callable[[PollResult], None] | None,
    ) -> list[PollResult]:
        concurrency = self._config.polling.concurrency
        loop = asyncio.get_running_loop()
        results: list[PollResult] = []
        # a source named twice is polled once (twice at once, the second was its own lost lease)
        pending_named = list(dict.fromkeys(only)) if only is not None else None
        queue: deque[SourceState] = deque()
        exhausted = False
        claimed_in_all = 0
        # Never `with` these: their exit waits for the threads, and a thread reading an article
        # page waits on this loop (the poll would hang); they are shut down once drained.
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="poll")
        storing = ThreadPoolExecutor(1, thread_name_prefix="store")
        outcomes = _Outcomes(self.storage, storing)
        saves = _Saves(self, storing)
        running: set[asyncio.Task[PollResult | asyncio.Task[PollResult]]] = set()
        saving: set[asyncio.Task[PollResult]] = set()  # plain outcomes, stored in batches
        claiming: asyncio.Future[list[SourceState]] | None = None
        # Tasks tell the loop below when they are done, one at a time: asyncio.wait over every
        # task in flight registered and removed a callback on each of them at every turn.
        ended: deque[asyncio.Future[Any]] = deque()
        woken = asyncio.Event()

        def ending(task: asyncio.Future[Any]) -> None:
            ended.append(task)
            woken.set()

        def started(task: asyncio.Task[Any], into: set[Any]) -> None:
            into.add(task)
            task.add_done_callback(ending)

        def finished(task: asyncio.Future[Any]) -> None:
            running.discard(task)
            saving.discard(task)
            outcome = task.result()
            if isinstance(outcome, asyncio.Task):
                started(outcome, saving)
                return
            results.append(outcome)
            if on_result:
                on_result(outcome)

        try:
            while not self._stop.is_set():
                if claiming is None and not exhausted and len(queue) < concurrency:
                    # claimed in the background, so the sources in hand go on meanwhile
                    wanted = 2 * concurrency - len(queue)
                    claiming = loop.run_in_executor(
                        storing, self._claim_and_staff, wanted, pending_named, only, claimed_in_all
                    )
                    claiming.add_done_callback(lambda _: woken.set())
                if claiming is not None and (claiming.done() or not queue):
                    claimed = await claiming
                    claiming = None
                    exhausted = not claimed
                    queue.extend(claimed)
                    claimed_in_all += len(claimed)
                    continue
                while queue and len(running) < concurrency and saves.waiting < _SAVING:
                    polled = self._poll_async(fetcher, queue.popleft(), pool, outcomes, saves)
                    started(asyncio.create_task(polled), running)
                if not running and not saving:
                    break
                while not ended and not (claiming is not None and claiming.done()):
                    woken.clear()
                    await woken.wait()
                while ended:
                    finished(ended.popleft())
        finally:
            # stopping, or a failure: what is in flight finishes and is stored, and what was
            # claimed but not started goes back at once for other workers
            if claiming is not None:
                with contextlib.suppress(Exception):
                    queue.extend(await claiming)
            for state in queue:
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(
                        storing, self.storage.release_source, state.id, self.owner
                    )
            queue.clear()
            while running or saving:
                done, _ = await asyncio.wait({*running, *saving})
                for task in done:
                    try:
                        finished(task)
                    except Exception:  # the first failure is what the poll raises
                        log.exception("a source's poll failed")
            pool.shutdown(wait=False)
            storing.shutdown(wait=False)
        return results

    def _claim_and_staff(
        self, count: int, named: list[str] | None, only: Sequence[str] | None, before: int
    ) -> list[SourceState]:
        """The next sources, and helper processes for as many as the poll has (in a thread: a
        claim is a transaction, and starting helpers takes a while)."""
        claimed = self._claim(count, named)
        wanted = len(only) if only is not None else before + len(claimed)
        self._helpers.want(self._config, helpers_for(self._config, wanted))
        return claimed

    async def _poll_async(
        self,
        fetcher: Fetcher,
        state: SourceState,
        pool: ThreadPoolExecutor,
        outcomes: _Outcomes,
        saves: _Saves,
    ) -> PollResult | asyncio.Task[PollResult]:
        """Fetch on the loop, then read and store a document in a thread; a plain outcome (a
        304, a failure) is handed on to be stored with others, and its place goes to the next
        source."""
        source = self._sources.get(state.id)
        loop = asyncio.get_running_loop()
        try:
            fetched = await fetcher.fetch_async(_request(state, source))
            plain = self._plain(state, source, fetched)
        except Exception as exc:  # a bug: poll_source reports it as the source's internal error
            return await loop.run_in_executor(pool, self.poll_source, state, exc)
        if plain is None:
            if _is_document(fetched) and not (source and (source.full_text or source.adaptive)):
                return await self._document(state, source, fetched, pool, saves)
            return await loop.run_in_executor(pool, self.poll_source, state, fetched)
        return asyncio.create_task(self._store_plain(state, fetched, plain, pool, outcomes))

    async def _document(
        self,
        state: SourceState,
        source: Source | None,
        fetched: FetchResult,
        pool: ThreadPoolExecutor,
        saves: _Saves,
    ) -> PollResult | asyncio.Task[PollResult]:
        """A document read in a helper and handed on to be stored with others, all from the
        loop, its place going to the next source; what needs more (no helper, a body that is no
        feed: a web page naming its feed, ...) goes the full way in a thread."""
        loop = asyncio.get_running_loop()
        now = self.storage.clock()
        content_type = fetched.headers.get("content-type")
        helpers, processor = self._helpers, self.processor
        try:
            future = helpers.submit(
                processor, fetched.body, fetched.url, now, content_type, state.id
            )
            if future is None:
                return await loop.run_in_executor(pool, self.poll_source, state, fetched)
            prepared = await asyncio.wrap_future(future)
        except BrokenProcessPool:
            helpers.broken()
            return await loop.run_in_executor(pool, self.poll_source, state, fetched)
        except (Exception, asyncio.CancelledError) as exc:
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                raise  # this poll is being cancelled, not just the helper's work
            # ParseError, mostly (the full way reads it again and says why); a pool shut down
            # under a reload, or its work cancelled: the full way reads it in the poller
            return await loop.run_in_executor(pool, self.poll_source, state, fetched)
        helpers.done()
        try:
            record, entries = self._record(state, source, fetched, now, prepared, None, None)
            if prepared.kept.dropped:
                dropped = len(prepared.kept.dropped)
                log.debug("source %s: %d entries left out by its filters", state.id, dropped)
            filer = Filed(processor, prepared) if prepared.filings is not None else processor
        except Exception as exc:  # poll_source records it as the source's internal error
            return await loop.run_in_executor(pool, self.poll_source, state, exc)
        fetch = (record, list(entries), self.owner, filer)
        # what waits to be stored keeps no body: up to _SAVING of them wait
        fetched = replace(fetched, body=b"")
        return asyncio.create_task(self._store_document(state, fetched, fetch, pool, saves))

    async def _store_document(
        self,
        state: SourceState,
        fetched: FetchResult,
        fetch: _Fetch,
        pool: ThreadPoolExecutor,
        saves: _Saves,
    ) -> PollResult:
        try:
            saved = await saves.save(fetch)
        except Exception as exc:  # poll_source records it as the source's internal error
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(pool, self.poll_source, state, exc)
        record = fetch[0]
        return self._reported(_result(record, fetched, saved, ""), state)

    async def _store_plain(
        self,
        state: SourceState,
        fetched: FetchResult,
        plain: tuple[FetchRecord, str],
        pool: ThreadPoolExecutor,
        outcomes: _Outcomes,
    ) -> PollResult:
        record, kind = plain
        try:
            held = await outcomes.record(record, self.owner)
        except Exception:  # nothing was stored: the full way does it again, or says why not
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(pool, self.poll_source, state, fetched)
        return self._reported(_result(record, fetched, SaveReport() if held else None, kind), state)

    def _reported(self, result: PollResult, state: SourceState) -> PollResult:
        """A fetch's result told to metrics, then logged (so a scrape after the line sees it)."""
        if self._observe is not None:
            self._observe(result)
        _log(result, 0 if result.ok else state.consecutive_failures + 1)
        return result

    def _claim(self, count: int, named: list[str] | None) -> list[SourceState]:
        if named is None:
            return self.storage.claim_due_sources(self.owner, self._lease, count)
        batch, named[:] = named[:count], named[count:]
        return self.storage.claim_sources(batch, self.owner, self._lease) if batch else []

    def poll_source(
        self, state: SourceState, fetched: FetchResult | Exception | None = None
    ) -> PollResult:
        """Fetch (unless `fetched` is what a fetch gave), parse and store one claimed source;
        never raises for the source's own faults."""
        source = self._sources.get(state.id)
        try:
            if isinstance(fetched, Exception):
                raise fetched
            result = self._poll(state, source, fetched)
            to_log = True
        except Exception as exc:  # a bug must not kill the worker or strand the lease
            log.exception("source %s: unexpected error", state.id)
            now = self.storage.clock()
            failures = state.consecutive_failures + 1  # backs off like any failure
            rhythm = self._rhythm(state, source)
            next_due = policy.after_failure(now, rhythm, self._rng, failures)
            record = FetchRecord(
                state.id, now, next_due, ok=False, error=f"internal error: {exc}"[:1000]
            )
            self.storage.record_fetch(record, owner=self.owner)
            result = PollResult(state.id, False, None, error=record.error, kind="internal_error")
            to_log = False  # log.exception said it
        if self._observe is not None:  # metrics first, so a scrape after the log line sees it
            self._observe(result)
        if to_log:
            _log(result, 0 if result.ok else state.consecutive_failures + 1)
        return result

    def _rhythm(self, state: SourceState, source: Source | None) -> policy.Rhythm:
        p = self._config.polling
        return policy.Rhythm(
            interval=(source.interval if source and source.interval else state.interval),
            adaptive=bool(source and source.adaptive),
            min_interval=p.min_interval,
            max_interval=p.max_interval,
            max_backoff=p.max_backoff,
            first_retry=p.first_retry,
        )

    def _poll(
        self, state: SourceState, source: Source | None, fetched: FetchResult | None
    ) -> PollResult:
        headers = dict(source.headers) if source else {}
        if fetched is None:
            fetched = self.fetcher.fetch(_request(state, source))
        now = self.storage.clock()
        prepared: Prepared | None = None
        discovered = None
        if state.discovered and fetched.status in (404, 410):
            # the feed found on the page is gone: the page may name its new one
            found = self._rediscover(state, headers, now)
            if found is not None:
                fetched, prepared, discovered = found.fetched, found.value, found.link.url
        error, kind = _fetch_error(fetched)
        if prepared is None and _is_document(fetched):
            try:
                prepared = self._prepare(state.id, fetched, now)
            except ParseError as exc:
                from aggregator.feed import discover, webpage  # lxml.html, for a web page only

                error, kind = str(exc), "parse_error"
                reads_page = source is not None and source.page is not None
                html = webpage.looks_like_html(fetched.body, fetched.headers.get("content-type"))
                if html and not reads_page:
                    try:  # a web page at the source's address: the feed it names
                        found = self._discover(state.id, fetched, headers, now)
                    except discover.NoFeedError as missing:
                        error = str(missing)
                    else:
                        fetched, prepared, discovered = found.fetched, found.value, found.link.url
                        error, kind = None, ""
        record, entries = self._record(state, source, fetched, now, prepared, error, discovered)
        ok = record.ok
        if prepared is not None and prepared.kept.dropped:
            dropped = len(prepared.kept.dropped)
            log.debug("source %s: %d entries left out by its filters", state.id, dropped)
        filer = self.processor
        if entries:
            self._warm_index()
        saved = self.storage.record_fetch(
            record,
            entries,
            owner=self.owner,
            filer=Filed(filer, prepared) if prepared and prepared.filings is not None else filer,
        )
        articles = failures_reading = 0
        if source is not None and source.full_text and saved is not None and ok:
            try:
                articles, failures_reading = self._read_articles(state)
            except Exception:  # the fetch is stored already: this must not undo it
                log.exception("source %s: reading its article pages", state.id)
        return _result(record, fetched, saved, kind, articles, failures_reading)

    def _record(
        self,
        state: SourceState,
        source: Source | None,
        fetched: FetchResult,
        now: datetime,
        prepared: Prepared | None,
        error: str | None,
        discovered: str | None,
    ) -> tuple[FetchRecord, tuple[Entry, ...]]:
        """What a fetch comes to for the source's state, and the entries to store."""
        entries: tuple[Entry, ...] = ()
        title, warning, ttl, in_document = None, None, None, 0
        if prepared is not None:
            parsed, capped = prepared.parsed, prepared.capped
            entries = prepared.kept.entries
            title, ttl = parsed.title, parsed.ttl
            warning = "; ".join(w for w in (capped, parsed.warning) if w) or None
            in_document = len(parsed.entries)
        ok = error is None
        gone = fetched.status == 410
        if gone:
            error = f"{status_text(410)}: the publisher removed this feed; polling stopped"
        failures = 0 if ok else state.consecutive_failures + 1
        rhythm = self._rhythm(state, source)
        next_due = self._next_due(state, rhythm, now, fetched, ok, failures, ttl)
        record = FetchRecord(
            source_id=state.id,
            fetched_at=now,
            next_due_at=next_due,
            status=fetched.status,
            ok=ok,
            error=error,
            etag=fetched.headers.get("etag") if ok else None,
            last_modified=fetched.headers.get("last-modified") if ok else None,
            permanent_url=None if discovered else fetched.permanent_url,
            gone=gone,
            warning=warning,
            entry_count=in_document if ok and fetched.status != 304 else None,
            feed_title=title or None,
            discovered_url=discovered if discovered != state.fetch_url else None,
        )
        return record, entries

    def _plain(
        self, state: SourceState, source: Source | None, fetched: FetchResult
    ) -> tuple[FetchRecord, str] | None:
        """The outcome of a fetch that gives nothing to read and needs nothing more (a 304, an
        error status, a failure), with its kind of failure, made without storage or network, so
        the loop can make it and store it with others; None where the fetch needs the full way
        (a document, a discovered feed gone, full text, adaptive timing)."""
        if (
            _is_document(fetched)
            or (state.discovered and fetched.status in (404, 410))
            or (source is not None and (source.full_text or source.adaptive))
        ):
            return None
        error, kind = _fetch_error(fetched)
        record, _ = self._record(state, source, fetched, self.storage.clock(), None, error, None)
        return record, kind

    def _read_articles(self, state: SourceState) -> tuple[int, int]:
        """Fetch the article pages of a full_text source's items not read yet (at most
        `polling.articles_per_poll`, the latest published first, all within one
        `polling.timeout`), keep their main text and what they say about themselves (the
        publisher's filing, dates, language, canonical address, picture), and file the items on
        both. Each page is fetched once, read or not; one that fails for a while (timeout,
        network, 429, 5xx) is tried again at later polls, a few times. A page's failure is its
        item's and the source's note, never the poll's. Returns the pages fetched and how many
        of them gave no text."""
        polling = self._config.polling
        pending = self.storage.pending_articles(state.id, polling.articles_per_poll)
        if not pending:
            return 0, 0
        now = self.storage.clock()
        budget = polling.timeout.total_seconds()
        deadline = time.monotonic() + budget
        fetched: list[ArticleFetch] = []
        read: list[tuple[int, Entry]] = []
        problems: list[str] = []
        for item in pending:
            left = deadline - time.monotonic()
            if left < min(1.0, budget / 4) or item.entry.link is None:
                break  # the rest wait for the next poll, rather than time out for good
            try:
                outcome = self._read_article(item.id, item.entry.link, state.fetch_url, left, now)
            except Exception as exc:  # a page must not fail its source: it is that item's note
                log.exception("source %s: reading %s", state.id, item.entry.link)
                outcome = ArticleFetch(item.id, None, f"could not be read: {exc}"[:500], now)
            fetched.append(outcome)
            if outcome.html is not None or outcome.publisher:  # filed again on what it says
                content = outcome.html or item.entry.content
                entry = replace(item.entry, content=content, publisher=outcome.publisher)
                read.append((item.id, entry))
            if outcome.html is None:
                problems.append(f"{item.entry.link}: {outcome.error}")
        filings = self.processor.file_all(state.id, [entry for _, entry in read])
        refiled = [(item_id, filing) for (item_id, _), filing in zip(read, filings, strict=True)]
        said = None
        if problems:
            said = (
                f"{len(problems)} of {len(fetched)} article pages could not be read "
                f"(the first: {problems[0]})"
            )
            log.info("source %s: %s", state.id, said)
        self.storage.record_articles(state.id, fetched, refiled, said)
        return len(fetched), len(problems)

    def _read_article(
        self, item_id: int, link: str, feed_url: str, left: float, now: datetime
    ) -> ArticleFetch:
        """One article page fetched and read."""
        from aggregator.feed import article, webpage
        from aggregator.feed.discover import problem_of

        refused = _refused_address(link, feed_url)
        if refused is not None:
            return ArticleFetch(item_id, None, refused, now)
        max_size = self._config.polling.max_size
        cap = min(max_size, article.MAX_BYTES)
        page = self.fetcher.fetch(FetchRequest(link, timeout=left, max_bytes=cap))
        problem = problem_of(page)
        transient = page.error in _TRANSIENT or page.status == 429 or (page.status or 0) >= 500
        if page.error is FetchError.TOO_LARGE:
            problem = f"the page is larger than the limit of {cap:,} bytes"
        content_type = page.headers.get("content-type")
        if problem is None and not webpage.looks_like_html(page.body, content_type):
            problem = f"not a web page ({content_type or 'no content type'})"
        if problem is not None:
            return ArticleFetch(item_id, None, problem, now, transient=transient)
        try:
            got = article.read(page.body, page.url, content_type)
        except article.TooComplexError as exc:
            return ArticleFetch(item_id, None, str(exc), now)
        facts = got.facts
        return ArticleFetch(
            item_id,
            got.html,
            None if got.html is not None else "no article text found on the page",
            now,
            publisher=facts.publisher,
            published=facts.published if _plausible(facts.published, now) else None,
            modified=facts.modified if _plausible(facts.modified, now) else None,
            language=facts.language if len(facts.language or "") <= 35 else None,
            image=facts.image,
            canonical=_own_canonical(facts.canonical, link),
        )

    def _discover(
        self,
        source_id: str,
        page: FetchResult,
        headers: dict[str, str],
        now: datetime,
        budget: float | None = None,
    ) -> discover.Found[Prepared]:
        """The first feed the page names that reads, prepared; within one fetch's timeout for
        them all (or `budget` seconds). Raises NoFeedError."""
        from aggregator.feed import discover

        return discover.find(
            self.fetcher,
            page,
            lambda fetched: self._prepare(source_id, fetched, now),
            headers=headers,
            budget=self._config.polling.timeout.total_seconds() if budget is None else budget,
        )

    def _rediscover(
        self, state: SourceState, headers: dict[str, str], now: datetime
    ) -> discover.Found[Prepared] | None:
        """The page at the source's address fetched again, for the feed it names now; None
        where the page or its feeds give none (the feed's own failure is then what is told)."""
        from aggregator.feed import discover, webpage

        budget = self._config.polling.timeout.total_seconds()  # the page and its feeds share it
        started = time.monotonic()
        page = self.fetcher.fetch(FetchRequest(state.url, headers=headers))
        left = budget - (time.monotonic() - started)
        if (
            left <= 0
            or not _is_document(page)
            or not webpage.looks_like_html(page.body, page.headers.get("content-type"))
        ):
            return None
        try:
            return self._discover(state.id, page, headers, now, budget=left)
        except discover.NoFeedError as missing:
            log.info("source %s: %s", state.id, missing)
            return None

    def _prepare(self, source_id: str, fetched: FetchResult, now: datetime) -> Prepared:
        """Parse, cap, filter (and in a helper process, file) a fetched body."""
        content_type = fetched.headers.get("content-type")
        body, url, processor = fetched.body, fetched.url, self.processor
        # Where helpers run, they read every document: the poller taking one when they were
        # busy gained 8-10% of a first pass with threads fetching, but its parsing brought lxml
        # and the parser's objects into the largest process (5 MiB at 1,000 sources), and on
        # the event loop it gains nothing measurable (three pairs, 12.8-20.4 s either way).
        done = self._helpers.prepare(processor, body, url, now, content_type, source_id)
        if done is not None:
            return done
        with self._parsing:
            return prepare(processor, body, url, now, content_type, source_id)

    def _next_due(
        self,
        state: SourceState,
        rhythm: policy.Rhythm,
        now: datetime,
        fetched: FetchResult,
        ok: bool,
        failures: int,
        ttl: timedelta | None,
    ) -> datetime:
        if not ok:
            transient = fetched.error in _TRANSIENT or (fetched.status or 0) >= 500
            return policy.after_failure(
                now, rhythm, self._rng, failures, fetched.headers, transient=transient
            )
        published: list[datetime] = []
        if rhythm.adaptive:
            published = self.storage.publication_times(state.id)
        return policy.after_success(
            now, rhythm, self._rng, published=published, ttl=ttl, headers=fetched.headers
        )


def _log(result: PollResult, failures: int) -> None:
    """One line per fetch; its fields also go in `extra`, for JSON logs."""
    status = result.status if result.status is not None else "-"
    fields = {
        "event": "fetch",
        "source": result.source_id,
        "status": result.status,
        "ok": result.ok,
        "duration": round(result.seconds, 3),
        "new": result.new,
        "updated": result.updated,
        "merged": result.merged,
    }
    if result.lost_lease:
        log.warning(
            "source %s: lease lost to another worker; result discarded",
            result.source_id,
            extra={**fields, "ok": False, "error": "lease lost"},
        )
    elif result.ok:
        log.info(
            "source %s: %s in %.2fs, %d new, %d updated%s",
            result.source_id,
            status,
            result.seconds,
            result.new,
            result.updated,
            f" ({result.warning})" if result.warning else "",
            extra={**fields, "warning": result.warning} if result.warning else fields,
        )
    else:
        log.warning(
            "source %s: failed after %.2fs (%s in a row): %s",
            result.source_id,
            result.seconds,
            "1 failure" if failures == 1 else f"{failures} failures",
            result.error,
            extra={**fields, "error": result.error, "failures": failures, "kind": result.kind},
        )
    if result.discovered:
        log.warning(
            "source %s: its url is a web page; polling the feed it names, %s: put that in "
            "feeds.yaml",
            result.source_id,
            result.discovered,
            extra={"event": "discovered", "source": result.source_id, "url": result.discovered},
        )
    elif result.moved_to:
        log.warning(
            "source %s moved permanently to %s: update its url in feeds.yaml",
            result.source_id,
            result.moved_to,
            extra={"event": "moved", "source": result.source_id, "url": result.moved_to},
        )


@dataclass(frozen=True)
class Preview:
    """What polling a source would read now, stored nowhere: for `poll --dry-run`, so editors can
    get a page source's selectors (or a feed's filters) right before anything is kept."""

    source_id: str
    url: str
    error: str | None = None
    discovered: str | None = None  # the url is a web page: the feed found on it
    prepared: Prepared | None = None
    dates: dict[str, str] | None = None  # a page source's item link -> its date as written


def preview(config: Config, fetcher: Fetcher, source: Source, now: datetime) -> Preview:
    """Fetch a source (unconditionally) and read, filter and file its document as a poll would,
    storing nothing; a web page that is no page source is searched for its feed, as a poll
    does."""
    from aggregator.feed import discover, webpage

    processor = Processor(config, index=False)
    fetched = fetcher.fetch(FetchRequest(source.url, headers=dict(source.headers)))
    problem = discover.problem_of(fetched)
    if problem is not None:
        return Preview(source.id, source.url, error=problem)
    content_type = fetched.headers.get("content-type")

    def read(document: FetchResult) -> Prepared:
        ct = document.headers.get("content-type")
        return prepare(processor, document.body, document.url, now, ct, source.id, file=True)

    try:
        prepared = read(fetched)
    except ParseError as exc:
        if source.page is not None or not webpage.looks_like_html(fetched.body, content_type):
            return Preview(source.id, fetched.url, error=str(exc))
        try:
            found = discover.find(
                fetcher,
                fetched,
                read,
                headers=dict(source.headers),
                budget=config.polling.timeout.total_seconds(),
            )
        except discover.NoFeedError as missing:
            return Preview(source.id, fetched.url, error=str(missing))
        return Preview(source.id, found.fetched.url, None, found.link.url, found.value)
    dates = None
    if source.page is not None:
        page = webpage.articles(fetched.body, fetched.url, source.page, now, content_type)
        dates = {a.link: a.date_text for a in page.articles}
    return Preview(source.id, fetched.url, prepared=prepared, dates=dates)
