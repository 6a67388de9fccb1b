"""HTTP retrieval of feeds (the only module that imports httpx); its transport is a parameter.

Every fetch is bounded: a wall-clock deadline over the whole fetch (connect, TLS, headers, body,
every redirect hop), enforced on each socket operation so a server trickling a byte a second cannot
stretch it; a body cap counted on the decoded bytes as they are produced (so a gzip or brotli bomb
is cut off like an endless body); and a redirect limit. Time spent waiting for a per-host slot is
not the source's: the deadline counts only time on the wire. Redirects are followed by hand to tell
permanent moves (301/308: editors should update feeds.yaml) from temporary ones. Politeness is
enforced here, for every caller: at most `per_host` requests in flight to one host and a minimum
gap between two requests to it. A failure is returned as data, never raised, so one bad source
never stops a poll.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from aggregator import __version__
from aggregator.feed.decoding import ACCEPT_ENCODING, DecodingError, decoded

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


_DEADLINE: ContextVar[float | None] = ContextVar("fetch_deadline", default=None)


def _within_deadline(timeout: float | None, late: type[Exception]) -> float | None:
    """A socket operation's timeout, shortened to what is left of the current fetch's deadline."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("the fetch's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _within_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _within_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket layer with the deadline applied; httpx's own timeouts are per read."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _within_deadline(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _apply_deadlines(client: httpx.Client) -> None:
    """Put the deadline backend under every connection pool of the client (direct and proxied).

    httpx takes no network backend, so this reaches into its transport's pool; a library change
    that moves it fails loudly here (and in the trickle tests), never silently unbounded.
    """
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        if transport is None or not isinstance(transport, httpx.HTTPTransport):
            continue  # an injected transport (tests' MockTransport) manages its own time
        pool = transport._pool
        backend = getattr(pool, "_network_backend", None)
        if not isinstance(backend, httpcore.NetworkBackend):
            raise RuntimeError("httpx/httpcore changed: cannot bound fetches by a deadline")
        if not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)


class _HostGate:
    """At most `limit` requests in flight to one host, and `gap` seconds between their starts."""

    def __init__(
        self, limit: int, gap: float, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._gap = gap
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._clock = clock
        self._sleep = sleep

    def __enter__(self) -> None:
        self._slots.acquire()
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + self._gap
        if start > now:
            self._sleep(start - now)

    def __exit__(self, *_exc: object) -> None:
        self._slots.release()


class Fetcher:
    """Fetches feeds politely and within bounds; safe to call from many threads."""

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
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._per_host = per_host
        self._host_gap = host_gap
        self._clock = clock
        self._sleep = sleep
        self._gates: dict[str, _HostGate] = {}
        self._gates_lock = threading.Lock()
        self._client = httpx.Client(
            transport=transport,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={
                "User-Agent": user_agent,
                "Accept": _ACCEPT,
                "Accept-Encoding": ACCEPT_ENCODING,
            },
        )
        _apply_deadlines(self._client)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _gate(self, url: str) -> _HostGate:
        host = (urlsplit(url).hostname or "").lower()
        with self._gates_lock:
            gate = self._gates.get(host)
            if gate is None:
                gate = _HostGate(self._per_host, self._host_gap, self._clock, self._sleep)
                self._gates[host] = gate
            return gate

    def fetch(self, request: FetchRequest) -> FetchResult:
        """GET a feed conditionally, following up to `max_redirects` redirects."""
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
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return FetchResult(
                    request.url,
                    error=FetchError.INVALID_URL,
                    message=f"not an http(s) URL: {url}",
                    permanent_url=permanent,
                    seconds=spent,
                )
            began = None
            try:
                with self._gate(url):
                    began = time.monotonic()
                    deadline = began + max(limit - spent, 0.0)
                    token = _DEADLINE.set(deadline)
                    try:
                        outcome = self._get(url, headers, deadline, cap)
                    finally:
                        _DEADLINE.reset(token)
            except httpx.TimeoutException:
                return self._failed(
                    request,
                    FetchError.TIMEOUT,
                    f"timed out after {round(limit, 1):g}s",
                    spent + _since(began),
                    permanent,
                )
            except httpx.InvalidURL as exc:
                return self._failed(
                    request, FetchError.INVALID_URL, str(exc), spent + _since(began), permanent
                )
            except (httpx.HTTPError, OSError, DecodingError) as exc:
                return self._failed(
                    request,
                    FetchError.NETWORK,
                    _describe(exc),
                    spent + _since(began),
                    permanent,
                )
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
        started = time.monotonic()
        try:
            with self._gate(url):
                token = _DEADLINE.set(time.monotonic() + self._timeout)
                try:
                    response = self._client.post(url, data=dict(data))
                finally:
                    _DEADLINE.reset(token)
        except httpx.TimeoutException:
            return FetchResult(url, error=FetchError.TIMEOUT, message="timed out")
        except httpx.InvalidURL as exc:
            return FetchResult(url, error=FetchError.INVALID_URL, message=str(exc))
        except (httpx.HTTPError, OSError) as exc:
            return FetchResult(url, error=FetchError.NETWORK, message=_describe(exc))
        return FetchResult(url, response.status_code, seconds=time.monotonic() - started)

    def _get(
        self, url: str, headers: Mapping[str, str], deadline: float, cap: int
    ) -> FetchResult | tuple[int, str]:
        """One request: a redirect to follow, or the final result."""
        remaining = max(0.001, deadline - time.monotonic())
        timeout = httpx.Timeout(remaining, connect=min(remaining, 10.0))
        with self._client.stream("GET", url, headers=headers, timeout=timeout) as response:
            if response.status_code in REDIRECTS and response.headers.get("location"):
                return response.status_code, response.headers["location"]
            kept = {
                name: response.headers[name] for name in _KEPT_HEADERS if name in response.headers
            }
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                return FetchResult(
                    url,
                    response.status_code,
                    headers=kept,
                    error=FetchError.TOO_LARGE,
                    message=_too_large(cap, f"{int(declared):,} bytes"),
                )
            body = bytearray()
            # Read to the end even for a 304 (whose body is empty): a response closed unread
            # closes its connection, and an all-304 poll then opened one per request.
            not_modified = response.status_code == 304  # no body, whatever the headers say
            encoding = None if not_modified else response.headers.get("content-encoding")
            for chunk in decoded(response.iter_raw(_CHUNK), encoding):
                body += chunk
                if len(body) > cap:
                    return FetchResult(
                        url,
                        response.status_code,
                        headers=kept,
                        error=FetchError.TOO_LARGE,
                        message=_too_large(cap, "more"),
                    )
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("total deadline passed")
            return FetchResult(url, response.status_code, bytes(body), kept)

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


def _too_large(limit: int, got: str) -> str:
    return f"the feed is larger than the limit of {limit:,} bytes ({got})"


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
    """The exception at the bottom of a chain (httpx wraps httpcore, which wraps the OSError)."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _describe(exc: BaseException) -> str:
    """A failure in words, the raw detail in the debug log."""
    text = str(exc) or type(exc).__name__
    root = _root_cause(exc)
    log.debug("fetch failed: %r (at its root: %r)", exc, root)
    if isinstance(root, socket.gaierror) and root.errno in _DNS_WORDS:
        return _DNS_WORDS[root.errno]
    if isinstance(root, ssl.SSLCertVerificationError):
        return f"the server's TLS certificate was not accepted: {root.verify_message}"
    if isinstance(root, ssl.SSLError):
        return f"the TLS handshake failed: {root.reason or text}"
    if isinstance(root, OSError) and root.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[root.errno]
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect: {text}"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "without sending" in text:  # h11: "Server disconnected without sending a response."
            return "the server closed the connection without answering"
        return f"the server broke the HTTP protocol: {text}"
    return text
