"""HTTP retrieval of feeds (the only module that imports aiohttp), on an event loop of its own.

Every fetch is bounded: a wall-clock deadline over the whole fetch (connect, TLS, headers, body,
every redirect hop), so a server trickling a byte a second cannot stretch it; a body cap counted on
the decoded bytes as they are produced (so a gzip or brotli bomb is cut off like an endless body);
the header limits of aiohttp's parser (128 fields of at most 8,190 bytes); and a redirect limit.
Time spent waiting for a per-host slot is not the source's: the deadline counts only time on the
wire. Redirects are followed by hand to tell permanent moves (301/308: editors should update
feeds.yaml) from temporary ones. Politeness is enforced here, for every caller: at most `per_host`
requests in flight to one host and a minimum gap between two requests to it. A failure is returned
as data, never raised, so one bad source never stops a poll.

All requests run on one event loop in a thread of the fetcher's own: the poller awaits
`fetch_async` there (1,000 304s took 0.22-0.25 s on the loop, 1.13-1.20 s with httpx in eight
threads), and every other caller uses `fetch` from its own thread.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import errno
import inspect
import logging
import netrc
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

from aggregator import __version__
from aggregator.exceptions import AggregatorError
from aggregator.feed.decoding import ACCEPT_ENCODING, DecodingError, decoded


@contextlib.contextmanager
def _without_trust_stores() -> Iterator[None]:
    """SSL contexts made meanwhile trust nothing. aiohttp makes two as it is imported, each
    reading the system's whole trust store (33-45 ms each here, most of its import, and memory
    for as long as the process lives); the fetcher never uses them, as it gives its connections
    a context of its own (`_TRUST`). Were one used, it would refuse every certificate: the patch
    can only fail closed. Only while aiohttp is imported, as a command starts, and only in the
    thread importing it: a context another thread makes meanwhile reads its trust store."""
    original = ssl.SSLContext.set_default_verify_paths
    importing = threading.get_ident()

    def skipped(self: ssl.SSLContext) -> None:
        if threading.get_ident() != importing:
            original(self)

    ssl.SSLContext.set_default_verify_paths = skipped  # type: ignore[method-assign]
    try:
        yield
    finally:
        ssl.SSLContext.set_default_verify_paths = original  # type: ignore[method-assign]


with _without_trust_stores():
    import aiohttp

_T = TypeVar("_T")

log = logging.getLogger(__name__)

REDIRECTS = (301, 302, 303, 307, 308)
PERMANENT = (301, 308)
_CHUNK = 64 * 1024
_KEPT_HEADERS = (
    "etag",
    "last-modified",
    "content-type",
    "retry-after",
    "cache-control",
    "expires",
    "date",
    "age",
)


class FetchError(StrEnum):
    """Why a fetch produced no response to use."""

    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    NETWORK = "network"
    REDIRECTS = "redirects"
    INVALID_URL = "invalid_url"


@dataclass(frozen=True)
class FetchRequest:
    url: str
    etag: str | None = None
    last_modified: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None  # seconds, where shorter than the fetcher's (a shared budget)
    max_bytes: int | None = None  # decoded bytes, where fewer than the fetcher's


@dataclass(frozen=True)
class FetchResult:
    """What came back: a final status and body, or an error saying why not."""

    url: str
    status: int | None = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    permanent_url: str | None = None
    error: FetchError | None = None
    message: str | None = None
    seconds: float = 0.0

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def user_agent(base_url: str | None) -> str:
    """Names the service, its version and where publishers can reach whoever runs it."""
    return f"aggregator/{__version__} (+{base_url})" if base_url else f"aggregator/{__version__}"


# URLs whose parts are remembered: a poll asks for the same ones again (their hosts shared)
_PLACES_KEPT = 20_000
_GATES_KEPT = 20_000  # hosts whose turns are kept; past it, those with nothing to wait for go


class _Place(NamedTuple):
    """What the fetcher reads off a URL, read once: splitting a source's URL three times at
    every poll (for its host's turn, for its proxy, to check it) was a twentieth of the Python an
    all-304 poll ran a source. About 250 bytes a URL: aiohttp's own parsed form of it would save
    as much again, but held at 1.2 KB a source (12 MB at 10,000 sources)."""

    scheme: str
    host: str  # lowered
    port: int | None


def _place_of(url: str, hosts: dict[str, str]) -> _Place:
    """Raises ValueError as urlsplit does (`http://[oops`)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return _Place(parts.scheme, hosts.setdefault(host, host), parts.port)


class _HostGate:
    """At most `limit` requests in flight to one host, and `gap` seconds between their starts.
    Lives on the fetcher's loop, so it needs no lock."""

    def __init__(
        self, limit: int, gap: float, clock: Callable[[], float], sleep: Callable[[float], object]
    ) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._gap = gap
        self._next_start = 0.0
        self._clock = clock
        self._sleep = sleep
        self._users = 0  # requests waiting for a slot or holding one

    def idle(self) -> bool:
        """No request waits or runs, and the next may start now: forgetting it loses nothing."""
        return self._users == 0 and self._next_start <= self._clock()

    async def __aenter__(self) -> None:
        self._users += 1
        try:
            await self._slots.acquire()
        except BaseException:
            self._users -= 1
            raise
        try:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + self._gap
            if start > now:
                waited = self._sleep(start - now)
                if inspect.isawaitable(waited):
                    await waited
        except BaseException:  # cancelled while waiting for its turn: the slot is not taken
            self._slots.release()
            self._users -= 1
            raise

    async def __aexit__(self, *_exc: object) -> None:
        self._slots.release()
        self._users -= 1


@dataclass(frozen=True)
class _Route:
    """How a request to one host goes: through which proxy, with which credentials."""

    proxy: str | None = None
    proxy_auth: str | None = None  # a Proxy-Authorization header
    auth: str | None = None  # an Authorization header, from .netrc


class _Environment:
    """What users of HTTP clients expect to be honoured: proxies from `HTTP_PROXY`,
    `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (or the system's settings) and credentials from
    `.netrc` (or the file `NETRC` names). Read once per fetcher and once per host: aiohttp's own
    `trust_env` reads them again for every request, in two hand-offs to other threads, which
    cost an all-304 pass of 1,000 sources a third of its time."""

    def __init__(self) -> None:
        import urllib.request

        self._bypass = urllib.request.proxy_bypass
        found = urllib.request.getproxies()
        self._proxies = {k: v for k, v in found.items() if k in ("http", "https", "all")}
        self._netrc = _read_netrc()
        self._routes: dict[tuple[str, str, int | None], _Route] = {}

    def route(self, place: _Place) -> _Route:
        route = self._routes.get(place)
        if route is None:
            route = self._routes[place] = self._find(*place)
        return route

    def _find(self, scheme: str, host: str, port: int | None) -> _Route:
        auth = self._credentials(host)
        proxy = self._proxies.get(scheme) or self._proxies.get("all")
        if not proxy or self._bypass(f"{host}:{port}" if port else host):  # NO_PROXY=host:port
            return _Route(auth=auth)
        where = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        proxy_auth = None
        if where.username is not None:  # http://user:secret@proxy:3128
            proxy_auth = _basic(unquote(where.username), unquote(where.password or ""))
        else:
            proxy_auth = self._credentials(where.hostname or "")
        netloc = where.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if where.port is not None:
            netloc += f":{where.port}"
        return _Route(f"{where.scheme}://{netloc}", proxy_auth, auth)

    def _credentials(self, host: str) -> str | None:
        found = self._netrc.authenticators(host) if self._netrc is not None and host else None
        if found is None:
            return None
        login, account, password = found
        return _basic(login or account or "", password or "")


def _basic(user: str, password: str) -> str:
    """HTTP Basic credentials, UTF-8 as RFC 7617 asks."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _read_netrc() -> netrc.netrc | None:
    """The user's .netrc (or the file `NETRC` names), where there is one that reads."""
    named = os.environ.get("NETRC")
    try:
        path = Path(named) if named else Path.home() / ".netrc"
        return netrc.netrc(str(path)) if path.is_file() else None
    except (OSError, RuntimeError, netrc.NetrcParseError) as exc:
        log.warning("%s is not read: %s", named or "~/.netrc", exc)
        return None


class _DeadlineError(AggregatorError):
    """The fetch's deadline passed (raised inside a hop, turned into a result by `fetch`)."""


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (as uvicorn's extra installs it, but on Windows):
    its loop and transports are in C, and an all-304 poll of 1,000 sources, where the loop's
    own work is a third of the fetching, took 0.98-1.12 s on it against 1.02-1.19 s on
    asyncio's (six pairs, alternating)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Fetcher:
    """Fetches feeds politely and within bounds; `fetch` is safe to call from many threads, and
    `fetch_async` from coroutines that `run` runs on the fetcher's loop."""

    def __init__(
        self,
        *,
        user_agent: str,
        timeout: float = 20.0,
        max_bytes: int = 10 * 1024 * 1024,
        max_redirects: int = 5,
        per_host: int = 2,
        host_gap: float = 1.0,
        connections: int = 16,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._per_host = per_host
        self._host_gap = host_gap
        self._clock = clock
        self._sleep = sleep
        self._connections = connections
        self._headers = {
            "User-Agent": user_agent,
            "Accept": _ACCEPT,
            "Accept-Encoding": ACCEPT_ENCODING,
        }
        self._gates: dict[str, _HostGate] = {}
        self._places: dict[str, _Place] = {}
        self._hosts: dict[str, str] = {}  # one string a host, for every URL of it
        self._session: aiohttp.ClientSession | None = None
        self._environment: _Environment | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._closed = False
        _TRUST.start()  # the trust store is read on its own thread meanwhile (_TrustStore)

    # -- the loop ---------------------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The fetcher's event loop, started in a thread of its own on first use."""
        with self._starting:
            if self._closed:
                raise RuntimeError("the fetcher is closed")
            if self._loop is None:
                loop = _new_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="fetch-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine on the fetcher's loop from another thread, and wait for its result."""
        try:
            loop = self._running_loop()
        except RuntimeError:
            work.close()
            raise
        if threading.current_thread() is self._thread:
            work.close()
            raise RuntimeError("called on the fetcher's own loop: await the coroutine instead")
        future = asyncio.run_coroutine_threadsafe(work, loop)
        try:
            return future.result()
        except BaseException:  # interrupted (Ctrl-C): the work stops too
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop: fetches still waiting (for a host's turn, or on the wire) end as
        failures for their callers, and the session is closed."""
        with self._starting:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close()

    async def _shutdown(self) -> None:
        """Cancel every task on the loop, wait for them, then close the session."""
        here = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not here]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _client(self) -> aiohttp.ClientSession:
        """The session, made on the loop at its first request."""
        if self._closed:
            raise aiohttp.ClientConnectionError("the fetcher was closed")
        if self._session is None:
            self._environment = _Environment()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=2 * self._connections,  # the poll's fetches, and its article pages
                    limit_per_host=0,  # the host gates limit that, for every caller
                    ssl=_TRUST.context(),
                ),
                headers=self._headers,
                auto_decompress=False,  # decoding.py, whose pieces a bomb cannot blow up
                trust_env=False,  # _Environment reads it once: aiohttp did at every request
                timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None),
            )
        return self._session

    def _place(self, url: str) -> _Place:
        place = self._places.get(url)
        if place is None:
            if len(self._places) >= _PLACES_KEPT:  # (redirects lead anywhere: both bounded)
                self._places, self._hosts = {}, {}
            place = self._places[url] = _place_of(url, self._hosts)
        return place

    def _route(self, url: str, headers: Mapping[str, str]) -> dict[str, Any]:
        """The headers, proxy and proxy credentials of a request, as aiohttp's arguments."""
        assert self._environment is not None  # made with the session
        route = self._environment.route(self._place(url))
        if route.auth and not any(name.lower() == "authorization" for name in headers):
            headers = {**headers, "Authorization": route.auth}  # the source's own header wins
        tunnel = None
        if route.proxy_auth and url.startswith("https:"):  # said to the proxy at CONNECT
            tunnel = {"Proxy-Authorization": route.proxy_auth}
        elif route.proxy_auth:  # the proxy reads the request itself
            headers = {**headers, "Proxy-Authorization": route.proxy_auth}
        return {"headers": headers, "proxy": route.proxy, "proxy_headers": tunnel}

    def _gate(self, url: str) -> _HostGate:
        host = self._place(url).host
        gate = self._gates.get(host)
        if gate is None:
            if len(self._gates) >= _GATES_KEPT:  # the idle ones go (redirects lead anywhere)
                self._gates = {h: g for h, g in self._gates.items() if not g.idle()}
            gate = _HostGate(self._per_host, self._host_gap, self._clock, self._sleep)
            self._gates[host] = gate
        return gate

    # -- fetching ---------------------------------------------------------------------------------

    def fetch(self, request: FetchRequest) -> FetchResult:
        """GET a feed conditionally, following up to `max_redirects` redirects."""
        try:
            return self.run(self.fetch_async(request))
        except (concurrent.futures.CancelledError, RuntimeError) as exc:  # closed meanwhile
            if not self._closed:
                raise
            return FetchResult(request.url, error=FetchError.NETWORK, message=f"not fetched: {exc}")

    async def fetch_async(self, request: FetchRequest) -> FetchResult:
        """`fetch`, for coroutines on the fetcher's loop."""
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("fetch_async runs on its fetcher's own loop (Fetcher.run)")
        spent = 0.0  # on the wire, across hops; waiting for a host's turn is not counted
        limit = self._timeout if request.timeout is None else min(self._timeout, request.timeout)
        cap = (
            self._max_bytes
            if request.max_bytes is None
            else min(self._max_bytes, request.max_bytes)
        )
        url, permanent, all_permanent = request.url, None, True
        headers = dict(request.headers)
        if request.etag:
            headers["If-None-Match"] = request.etag
        if request.last_modified:
            headers["If-Modified-Since"] = request.last_modified
        for _hop in range(self._max_redirects + 1):
            place = self._place(url)
            if place.scheme not in ("http", "https") or not place.host:
                return FetchResult(
                    request.url,
                    error=FetchError.INVALID_URL,
                    message=f"not an http(s) URL: {url}",
                    permanent_url=permanent,
                    seconds=spent,
                )
            began = None
            try:
                async with self._gate(url):
                    began = time.monotonic()
                    deadline = began + max(limit - spent, 0.0)
                    outcome = await self._get(url, headers, deadline, cap)
            except _DeadlineError:
                return self._failed(
                    request,
                    FetchError.TIMEOUT,
                    f"timed out after {round(limit, 1):g}s",
                    spent + _since(began),
                    permanent,
                )
            except DecodingError as exc:
                return self._failed(
                    request, FetchError.NETWORK, str(exc), spent + _since(began), permanent
                )
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                if _bad_url(exc):
                    error, message = FetchError.INVALID_URL, f"not a usable URL: {exc}"
                else:
                    error, message = FetchError.NETWORK, _describe(exc)
                return self._failed(request, error, message, spent + _since(began), permanent)
            spent += _since(began)
            if isinstance(outcome, FetchResult):
                return _finish(outcome, request.url, permanent, spent)
            status, location = outcome
            try:
                target = urljoin(url, location)
                moved = urlsplit(target)
                usable = moved.scheme in ("http", "https") and bool(moved.hostname)
            except ValueError:  # "http://[oops/": not even a URL
                target, usable = location, False
            if not usable:
                return self._failed(
                    request,
                    FetchError.INVALID_URL,
                    f"redirected ({status}) to a URL that is not http(s): {target[:200]}",
                    spent,
                    permanent,
                )
            if _origin(target) != _origin(url):  # a source's credentials are for its own host
                headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS}
            url = target
            all_permanent = all_permanent and status in PERMANENT
            if all_permanent:
                permanent = url
        return self._failed(
            request,
            FetchError.REDIRECTS,
            f"more than {self._max_redirects} redirects",
            spent,
            permanent,
        )

    def post_form(self, url: str, data: Mapping[str, str]) -> FetchResult:
        """POST a form (a WebSub ping, say) within the same bounds; the body is not kept."""
        return self.run(self._post_form(url, data))

    async def _post_form(self, url: str, data: Mapping[str, str]) -> FetchResult:
        started = time.monotonic()
        try:
            async with self._gate(url), _deadline(started + self._timeout):
                session = self._client()
                response = await session.post(
                    url, data=dict(data), allow_redirects=False, **self._route(url, {})
                )
                async with response:
                    await response.read()
        except _DeadlineError:
            return FetchResult(url, error=FetchError.TIMEOUT, message="timed out")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            if _bad_url(exc):
                return FetchResult(url, error=FetchError.INVALID_URL, message=str(exc))
            return FetchResult(url, error=FetchError.NETWORK, message=_describe(exc))
        return FetchResult(url, response.status, seconds=time.monotonic() - started)

    async def _get(
        self, url: str, headers: Mapping[str, str], deadline: float, cap: int
    ) -> FetchResult | tuple[int, str]:
        """One request: a redirect to follow, or the final result."""
        async with _deadline(deadline):
            response = await self._client().get(
                url, allow_redirects=False, **self._route(url, headers)
            )
            async with response:
                status = response.status
                if status in REDIRECTS and response.headers.get("location"):
                    return status, response.headers["location"]
                kept = _kept(response.headers)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    return _too_large(url, status, kept, cap, f"{int(declared):,} bytes")
                # Read to the end even for a 304 (whose body is empty): a response closed
                # unread closes its connection, and an all-304 poll then opened one per request.
                raw: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > cap:  # even compressed, more than the cap decoded is likely
                        return _too_large(url, status, kept, cap, "more")
                    raw.append(chunk)
        if status == 304 or not raw:  # no body, whatever the headers say
            return FetchResult(url, status, b"", kept)
        body = bytearray()
        for piece in decoded(raw, response.headers.get("content-encoding")):
            body += piece
            if len(body) > cap:
                return _too_large(url, status, kept, cap, "more")
        return FetchResult(url, status, bytes(body), kept)

    def _failed(
        self,
        request: FetchRequest,
        error: FetchError,
        message: str,
        seconds: float,
        permanent: str | None,
    ) -> FetchResult:
        return FetchResult(
            request.url,
            error=error,
            message=message,
            permanent_url=permanent if permanent and permanent != request.url else None,
            seconds=seconds,
        )


@contextlib.asynccontextmanager
async def _deadline(when: float) -> AsyncIterator[None]:
    """Everything in the block ends by `when` (time.monotonic's clock, which is the loop's): a
    wall-clock bound over connect, TLS, headers and body together, not a per-read timeout."""
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + when - time.monotonic()):
            yield
    except TimeoutError as exc:
        raise _DeadlineError from exc


_CREDENTIALS = ("authorization", "cookie", "proxy-authorization")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _kept(headers: Mapping[str, str]) -> dict[str, str]:
    """The response headers the service uses, where they are ASCII as HTTP wants: aiohttp keeps
    other bytes as surrogates, which no database stores, and an ETag is sent back as it came."""
    return {
        name: value
        for name in _KEPT_HEADERS
        if (value := headers.get(name)) is not None and value.isascii()
    }


def _bad_url(exc: Exception) -> bool:
    """Whether a request failed on its URL rather than on the network: aiohttp's InvalidURL, or
    a ValueError that is no client or socket error (a refused certificate is all three:
    ssl.CertificateError is a ValueError)."""
    return isinstance(exc, aiohttp.InvalidURL) or not isinstance(
        exc, (aiohttp.ClientError, OSError)
    )


def _ssl_context() -> ssl.SSLContext:
    """The system's trust store (and `SSL_CERT_FILE`/`SSL_CERT_DIR`, which OpenSSL reads);
    certifi's where the system has none (a python.org build on macOS). Made as aiohttp makes its
    own (HTTP/1.1 offered by ALPN)."""
    paths = ssl.get_default_verify_paths()
    cafile = None
    if not any(p and Path(p).exists() for p in (paths.cafile, paths.capath)):
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            pass
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["http/1.1"])
    return context


class _TrustStore:
    """The SSL context of every fetcher in the process, made once, on a thread of its own from
    the first fetcher's start: reading the trust store does not hold the GIL, so it overlaps the
    rest of a command's start instead of adding to it. The thread is not a daemon: a command
    that ends at once waits for it (at most the 30-45 ms it takes), as OpenSSL's clean-up at
    exit would pull the store from under it. A failure is not kept: the next fetch tries again
    (and says why, as the first did)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: concurrent.futures.Future[ssl.SSLContext] | None = None

    def start(self) -> None:
        with self._lock:
            if self._made is not None:
                return
            made: concurrent.futures.Future[ssl.SSLContext] = concurrent.futures.Future()
            try:
                threading.Thread(target=self._make, args=(made,), name="trust-store").start()
            except RuntimeError:  # no thread to be had: made when first needed instead
                return
            self._made = made

    @staticmethod
    def _make(made: concurrent.futures.Future[ssl.SSLContext]) -> None:
        try:
            made.set_result(_ssl_context())
        except BaseException as exc:  # the fetch waiting for it says what went wrong
            made.set_exception(exc)

    def context(self) -> ssl.SSLContext:
        self.start()
        with self._lock:
            made = self._made
            if made is None:  # no thread: made here
                made = self._made = concurrent.futures.Future()
                self._make(made)
        try:
            return made.result()
        except BaseException:
            with self._lock:
                if self._made is made:
                    self._made = None
            raise


_TRUST = _TrustStore()


def prepare() -> None:
    """Start making what the first fetch needs (the TLS trust store) in the background, for a
    command to call as soon as it knows it will fetch (fetchers start it anyway)."""
    _TRUST.start()


_ACCEPT = (
    "application/atom+xml, application/rss+xml, application/feed+json, application/json;q=0.9, "
    "application/rdf+xml;q=0.9, application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)


def status_text(status: int) -> str:
    """An HTTP status as editors read it: "HTTP 404 Not Found"."""
    from http import HTTPStatus

    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _since(began: float | None) -> float:
    return 0.0 if began is None else time.monotonic() - began


def _finish(
    result: FetchResult, original: str, permanent: str | None, seconds: float
) -> FetchResult:
    return FetchResult(
        url=result.url,
        status=result.status,
        body=result.body,
        headers=result.headers,
        permanent_url=permanent if permanent and permanent != original else None,
        error=result.error,
        message=result.message,
        seconds=seconds,
    )


def _too_large(url: str, status: int, kept: dict[str, str], limit: int, got: str) -> FetchResult:
    message = f"the feed is larger than the limit of {limit:,} bytes ({got})"
    return FetchResult(url, status, headers=kept, error=FetchError.TOO_LARGE, message=message)


# What a connection failure means, by the errno of the OSError at its root: editors read these on
# the status page and in `aggregator sources`, not "[Errno 111] Connection refused".
_ERRNO_WORDS = {
    errno.ECONNREFUSED: "the server refused the connection (nothing listens on that port)",
    errno.ECONNRESET: "the server closed the connection",
    errno.ECONNABORTED: "the connection was aborted",
    errno.EHOSTUNREACH: "the host is unreachable",
    errno.ENETUNREACH: "the network is unreachable",
    errno.ETIMEDOUT: "the connection timed out",
    errno.EADDRNOTAVAIL: "the address is not available",
}
_DNS_WORDS = {
    code: words
    for name, words in (
        ("EAI_NONAME", "the host name does not resolve (no such host in DNS)"),
        ("EAI_NODATA", "the host name has no address in DNS"),
        ("EAI_AGAIN", "the host name could not be looked up (DNS did not answer)"),
        ("EAI_FAIL", "the host name could not be looked up (DNS failed)"),
    )
    if (code := getattr(socket, name, None)) is not None
}


def _root_cause(exc: BaseException) -> BaseException:
    """The exception at the bottom of a chain (aiohttp wraps the OSError it met)."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _describe(exc: BaseException) -> str:
    """A failure in words, the raw detail in the debug log."""
    text = str(exc) or type(exc).__name__
    root = _root_cause(exc)
    log.debug("fetch failed: %r (at its root: %s: %s)", exc, type(root).__name__, root)
    if isinstance(root, socket.gaierror) and root.errno in _DNS_WORDS:
        return _DNS_WORDS[root.errno]
    if isinstance(root, ssl.SSLCertVerificationError):
        return f"the server's TLS certificate was not accepted: {root.verify_message}"
    if isinstance(root, ssl.SSLError):
        return f"the TLS handshake failed: {root.reason or text}"
    if isinstance(root, OSError) and root.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[root.errno]
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect: {text}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the server broke off or garbled the body: {text}"
    if isinstance(exc, aiohttp.ClientResponseError):  # a status line or header that won't parse
        return f"the server broke the HTTP protocol: {exc.message or text}"
    return text
