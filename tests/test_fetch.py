"""Fetching against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import errno
import gzip
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from aggregator.feed import fetch as fetch_module
from aggregator.feed.fetch import (
    Fetcher,
    FetchError,
    FetchRequest,
    FetchResult,
    _describe,
    user_agent,
)
from tests.feedserver import FeedServer, Reply, Request, certificate, endless, feed_file

RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
<item><guid>1</guid><title>One</title></item></channel></rss>"""


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with Fetcher(
        user_agent=user_agent("https://news.example.org/"),
        timeout=2.0,
        max_bytes=1024 * 1024,
        host_gap=0.0,
    ) as client:
        yield client


def test_etag_gives_304_on_the_second_fetch(server: FeedServer, fetcher: Fetcher) -> None:
    server.routes["/feed"] = feed_file(RSS, etag='"v1"')
    first = fetcher.fetch(FetchRequest(server.url("/feed")))
    assert first.status == 200 and first.body == RSS and first.headers["etag"] == '"v1"'
    second = fetcher.fetch(FetchRequest(server.url("/feed"), etag=first.headers["etag"]))
    assert second.not_modified and second.body == b""
    [_, conditional] = server.requests_to("/feed")
    assert conditional.headers["if-none-match"] == '"v1"'
    assert conditional.headers["user-agent"].startswith("aggregator/0.")
    assert "https://news.example.org/" in conditional.headers["user-agent"]


def test_a_304_leaves_its_connection_open_for_the_next_request(
    server: FeedServer, fetcher: Fetcher
) -> None:
    """An all-304 poll is most polls: closing the connection after each cost a connect apiece."""
    server.routes["/feed"] = feed_file(RSS, etag='"v1"')
    assert fetcher.fetch(FetchRequest(server.url("/feed"))).status == 200
    for _ in range(4):
        assert fetcher.fetch(FetchRequest(server.url("/feed"), etag='"v1"')).status == 304
    assert len({logged.peer for logged in server.requests_to("/feed")}) == 1


def test_last_modified_gives_304(server: FeedServer, fetcher: Fetcher) -> None:
    stamp = "Tue, 24 Nov 2026 10:00:00 GMT"
    server.routes["/feed"] = feed_file(RSS, last_modified=stamp)
    first = fetcher.fetch(FetchRequest(server.url("/feed")))
    again = fetcher.fetch(
        FetchRequest(server.url("/feed"), last_modified=first.headers["last-modified"])
    )
    assert first.status == 200 and again.status == 304


def test_gzip_is_accepted_and_decoded(server: FeedServer, fetcher: Fetcher) -> None:
    server.routes["/feed"] = feed_file(RSS, gzipped=True)
    result = fetcher.fetch(FetchRequest(server.url("/feed")))
    assert result.status == 200 and result.body == RSS
    assert "gzip" in server.requests_to("/feed")[0].headers["accept-encoding"]


def test_permanent_redirect_reports_the_new_url(server: FeedServer, fetcher: Fetcher) -> None:
    server.routes["/old"] = lambda r: Reply(301, headers={"Location": "/new"})
    server.routes["/new"] = feed_file(RSS)
    result = fetcher.fetch(FetchRequest(server.url("/old")))
    assert result.status == 200 and result.body == RSS
    assert result.permanent_url == server.url("/new")


def test_temporary_redirect_keeps_the_old_url(server: FeedServer, fetcher: Fetcher) -> None:
    server.routes["/old"] = lambda r: Reply(302, headers={"Location": server.url("/tmp")})
    server.routes["/tmp"] = feed_file(RSS)
    result = fetcher.fetch(FetchRequest(server.url("/old")))
    assert result.status == 200 and result.permanent_url is None


def test_a_permanent_move_then_a_temporary_hop_keeps_the_permanent_target(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.routes["/a"] = lambda r: Reply(308, headers={"Location": "/b"})
    server.routes["/b"] = lambda r: Reply(307, headers={"Location": "/c"})
    server.routes["/c"] = feed_file(RSS)
    assert fetcher.fetch(FetchRequest(server.url("/a"))).permanent_url == server.url("/b")


def test_redirect_loops_stop(server: FeedServer, fetcher: Fetcher) -> None:
    server.routes["/loop"] = lambda r: Reply(302, headers={"Location": "/loop"})
    result = fetcher.fetch(FetchRequest(server.url("/loop")))
    assert result.error is FetchError.REDIRECTS and result.message == "more than 5 redirects"
    assert len(server.requests_to("/loop")) == 6


def test_what_a_url_says_is_remembered_for_so_many_urls(
    server: FeedServer, fetcher: Fetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parts of a URL (scheme, host, port) are read once and kept, for at most
    `_PLACES_KEPT` URLs and their hosts (a source redirecting to ever new hosts grows nothing
    past it), and fetching goes on the same when they are forgotten."""
    monkeypatch.setattr(fetch_module, "_PLACES_KEPT", 3)
    for n in range(5):
        server.routes[f"/f{n}"] = feed_file(RSS)
        result = fetcher.fetch(FetchRequest(server.url(f"/f{n}")))
        assert result.status == 200 and result.body == RSS
        assert len(fetcher._places) <= 3 and len(fetcher._hosts) <= 3
    kept = list(fetcher._places.values())
    assert len(kept) >= 2 and {place.host for place in kept} == {"127.0.0.1"}
    assert len({id(place.host) for place in kept}) == 1  # one string for the host
    assert fetcher._place("HTTP://Example.ORG:8080/a") == ("http", "example.org", 8080)


@pytest.mark.parametrize("status", [404, 410, 429, 500, 503])
def test_error_statuses_come_back_as_data(
    server: FeedServer, fetcher: Fetcher, status: int
) -> None:
    server.routes["/feed"] = lambda r: Reply(status, b"no", {"Retry-After": "120"})
    result = fetcher.fetch(FetchRequest(server.url("/feed")))
    assert result.status == status and result.error is None
    assert result.headers["retry-after"] == "120"


def test_a_stalled_server_times_out(server: FeedServer) -> None:
    server.routes["/stall"] = lambda r: Reply(200, RSS, delay=3.0)
    with Fetcher(user_agent="t", timeout=0.5, host_gap=0.0) as fetcher:
        result = fetcher.fetch(FetchRequest(server.url("/stall")))
    assert result.error is FetchError.TIMEOUT and result.message == "timed out after 0.5s"


def test_an_endless_body_is_cut_at_the_size_limit(server: FeedServer, fetcher: Fetcher) -> None:
    server.routes["/endless"] = lambda r: Reply(200, endless())
    result = fetcher.fetch(FetchRequest(server.url("/endless")))
    assert result.error is FetchError.TOO_LARGE
    assert result.message == "the feed is larger than the limit of 1,048,576 bytes (more)"


def test_a_declared_huge_body_is_refused_before_reading(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.routes["/big"] = lambda r: Reply(200, b"x" * (2 * 1024 * 1024))
    result = fetcher.fetch(FetchRequest(server.url("/big")))
    assert result.error is FetchError.TOO_LARGE and "(2,097,152 bytes)" in (result.message or "")


def test_a_gzip_bomb_is_cut_at_the_decompressed_size(server: FeedServer, fetcher: Fetcher) -> None:
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))  # 8 KB on the wire, 8 MiB unpacked
    server.routes["/bomb"] = lambda r: Reply(200, bomb, {"Content-Encoding": "gzip"})
    result = fetcher.fetch(FetchRequest(server.url("/bomb")))
    assert len(bomb) < 64 * 1024 and result.error is FetchError.TOO_LARGE


def test_refused_connections_are_network_errors(fetcher: Fetcher) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = fetcher.fetch(FetchRequest(f"http://127.0.0.1:{port}/feed"))
    assert result.error is FetchError.NETWORK
    assert result.message == "the server refused the connection (nothing listens on that port)"


@pytest.mark.parametrize(
    ("cause", "words"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "does not resolve"),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), "DNS did not answer"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "closed the"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "network is unreachable"),
    ],
)
def test_connection_failures_are_said_in_words_with_the_detail_in_the_debug_log(
    cause: OSError, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What aiohttp raises for a name that does not resolve and the like, its cause chained as
    aiohttp chains it (tests reach 127.0.0.1 only, so these failures cannot be had for real)."""
    key = ConnectionKey("feeds.example", 80, False, True, None, None, None, None)
    try:
        try:
            raise cause
        except OSError as exc:
            raise aiohttp.ClientConnectorError(key, exc) from exc
    except aiohttp.ClientConnectorError as exc:
        with caplog.at_level(logging.DEBUG, logger="aggregator.feed.fetch"):
            said = _describe(exc)
    assert words in said and "Errno" not in said
    assert str(cause) in caplog.text  # the raw detail, for whoever debugs


def test_extra_headers_are_sent(server: FeedServer, fetcher: Fetcher) -> None:
    server.routes["/feed"] = feed_file(RSS)
    fetcher.fetch(FetchRequest(server.url("/feed"), headers={"Authorization": "Bearer t0k"}))
    assert server.requests_to("/feed")[0].headers["authorization"] == "Bearer t0k"


def test_at_most_per_host_requests_are_in_flight(server: FeedServer) -> None:
    in_flight, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()

    def slow(_request: Request) -> Reply:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        release.wait(0.2)
        with lock:
            in_flight -= 1
        return Reply(200, RSS)

    server.routes["/slow"] = slow
    with (
        Fetcher(user_agent="t", per_host=2, host_gap=0.0, timeout=10) as fetcher,
        ThreadPoolExecutor(8) as pool,
    ):
        results = list(
            pool.map(lambda _: fetcher.fetch(FetchRequest(server.url("/slow"))), range(8))
        )
    assert all(r.status == 200 for r in results)
    assert most == 2


def test_requests_to_one_host_are_spaced_by_the_gap(server: FeedServer) -> None:
    server.routes["/feed"] = feed_file(RSS)
    slept: list[float] = []
    with Fetcher(user_agent="t", host_gap=5.0, clock=lambda: 100.0, sleep=slept.append) as fetcher:
        for _ in range(3):
            fetcher.fetch(FetchRequest(server.url("/feed")))
    assert slept == [5.0, 10.0]  # the clock stands still, so each waits for its own slot


def test_hosts_turns_are_forgotten_only_when_nothing_waits_on_them(
    server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `_GATES_KEPT` hosts (a source may redirect anywhere), the hosts whose next request may
    start now are forgotten; one whose gap is still running is kept, so no host is asked sooner
    than its gap allows."""
    monkeypatch.setattr(fetch_module, "_GATES_KEPT", 2)
    server.routes["/feed"] = feed_file(RSS)
    now = [100.0]
    slept: list[float] = []

    def at(host: str) -> FetchRequest:
        return FetchRequest(server.url("/feed").replace("127.0.0.1", host))

    with Fetcher(
        user_agent="t", host_gap=5.0, timeout=5, clock=lambda: now[0], sleep=slept.append
    ) as fetcher:
        fetcher.fetch(at("127.0.0.1"))
        fetcher.fetch(at("localhost"))
        fetcher.fetch(at("127.0.0.2"))  # (nothing listens there: a failure, after its turn)
        assert set(fetcher._gates) == {"127.0.0.1", "localhost", "127.0.0.2"}  # all in a gap
        assert fetcher.fetch(at("127.0.0.1")).status == 200
        assert slept == [5.0]  # its gap held
        now[0] = 200.0
        fetcher.fetch(at("127.0.0.3"))
        assert set(fetcher._gates) == {"127.0.0.3"}


def test_a_fetchs_time_leaves_out_its_wait_for_the_hosts_gap(server: FeedServer) -> None:
    """`304 in 7.98s` from 127.0.0.1 was the wait for a slot at the host, not the fetch: the time
    shown starts when the request may go. (The gap is a real second; the fetch from 127.0.0.1
    takes milliseconds, so the margin is wide on any machine.)"""
    server.routes["/feed"] = feed_file(RSS)
    with Fetcher(user_agent="t", host_gap=1.0, timeout=10) as fetcher:
        first = fetcher.fetch(FetchRequest(server.url("/feed")))
        second = fetcher.fetch(FetchRequest(server.url("/feed")))  # waits about a second first
    assert first.status == second.status == 200
    assert second.seconds < 0.5, second.seconds


def test_a_proxy_from_the_environment_carries_the_request(
    server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY as every HTTP client honours it: the proxy gets the request in absolute form
    (the feed's host need not even resolve), with the proxy's credentials from its URL."""
    target = "http://feeds.invalid/feed.xml"
    server.routes[target] = feed_file(RSS)
    monkeypatch.setenv("HTTP_PROXY", f"http://squid:s%40cret@127.0.0.1:{server.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    with Fetcher(user_agent="t", host_gap=0.0, timeout=5) as fetcher:
        result = fetcher.fetch(FetchRequest(target))
    assert result.status == 200 and result.body == RSS
    [seen] = server.requests_to(target)
    expected = "Basic " + base64.b64encode(b"squid:s@cret").decode()
    assert seen.headers["proxy-authorization"] == expected


def test_no_proxy_sends_a_host_direct(server: FeedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a proxy that is not there: going through it would fail
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    server.routes["/feed"] = feed_file(RSS)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead}")
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with Fetcher(user_agent="t", host_gap=0.0, timeout=5) as fetcher:
        assert fetcher.fetch(FetchRequest(server.url("/feed"))).status == 200
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("no_proxy", raising=False)
    with Fetcher(user_agent="t", host_gap=0.0, timeout=5) as fetcher:
        assert fetcher.fetch(FetchRequest(server.url("/feed"))).error is FetchError.NETWORK


def test_netrc_credentials_are_sent_unless_the_source_sets_its_own(
    server: FeedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.routes["/private"] = feed_file(RSS)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login editor password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with Fetcher(user_agent="t", host_gap=0.0, timeout=5) as fetcher:
        fetcher.fetch(FetchRequest(server.url("/private")))
        fetcher.fetch(FetchRequest(server.url("/private"), headers={"Authorization": "Bearer x"}))
    first, second = server.requests_to("/private")
    assert first.headers["authorization"] == "Basic " + base64.b64encode(b"editor:hunter2").decode()
    assert second.headers["authorization"] == "Bearer x"


def test_a_validator_that_is_not_ascii_is_dropped(server: FeedServer, fetcher: Fetcher) -> None:
    """An ETag with a byte past ASCII came back as a surrogate no database stores, and the
    source's every poll failed; it is dropped (the next fetch is unconditional), the body kept."""
    server.routes["/feed"] = feed_file(RSS, etag='"caf\xe9"')  # sent as the latin-1 byte 0xE9
    result = fetcher.fetch(FetchRequest(server.url("/feed")))
    assert result.status == 200 and result.body == RSS
    assert "etag" not in result.headers and result.headers["content-type"]


def test_no_proxy_may_name_a_port(server: FeedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    server.routes["/feed"] = feed_file(RSS)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead}")
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", f"127.0.0.1:{server.port}")
    with Fetcher(user_agent="t", host_gap=0.0, timeout=5) as fetcher:
        assert fetcher.fetch(FetchRequest(server.url("/feed"))).status == 200


def test_closing_the_fetcher_ends_every_fetch_still_waiting(server: FeedServer) -> None:
    """One fetch on the wire, one waiting for the host's only slot: closing the fetcher gives
    both callers a failure, never a thread left waiting for good."""
    server.routes["/stall"] = lambda r: Reply(200, RSS, delay=3.0)
    fetcher = Fetcher(user_agent="t", per_host=1, host_gap=0.0, timeout=10)
    results: list[object] = []
    callers = [
        threading.Thread(
            target=lambda: results.append(fetcher.fetch(FetchRequest(server.url("/stall")))),
            daemon=True,
        )
        for _ in range(2)
    ]
    for caller in callers:
        caller.start()
    while len(server.requests_to("/stall")) < 1:  # the first is on the wire
        threading.Event().wait(0.01)
    fetcher.close()
    for caller in callers:
        caller.join(10)  # a guard against a caller left hanging, not a timing
    assert not any(caller.is_alive() for caller in callers)
    assert len(results) == 2
    assert all(isinstance(r, FetchResult) and r.error is FetchError.NETWORK for r in results)


def test_a_sources_credentials_do_not_follow_a_redirect_to_another_host(
    server: FeedServer, fetcher: Fetcher
) -> None:
    """As browsers and other clients do: a feed's Authorization or Cookie header is for the host
    it was written for, not for wherever that host redirects."""
    elsewhere = f"http://localhost:{server.port}/moved"  # another host name, the same server
    server.routes["/feed"] = lambda r: Reply(302, headers={"Location": elsewhere})
    server.routes["/here"] = lambda r: Reply(302, headers={"Location": "/moved"})
    server.routes["/moved"] = feed_file(RSS)
    secret = {"Authorization": "Bearer t0k", "Cookie": "session=1"}
    assert fetcher.fetch(FetchRequest(server.url("/feed"), headers=secret)).status == 200
    assert fetcher.fetch(FetchRequest(server.url("/here"), headers=secret)).status == 200
    away, home = server.requests_to("/moved")
    assert "authorization" not in away.headers and "cookie" not in away.headers
    assert home.headers["authorization"] == "Bearer t0k"  # same host: kept


HTTPS_PROBE = """
import sys
from aggregator.feed.fetch import Fetcher, FetchRequest
with Fetcher(user_agent="probe") as fetcher:
    result = fetcher.fetch(FetchRequest(sys.argv[1]))
print(result.status, result.error, result.message)
"""


def test_https_is_verified_against_the_trust_store(tmp_path: Path) -> None:
    """aiohttp's own SSL contexts are made trusting nothing (fetch.py imports it so, to skip
    reading the trust store twice); the fetcher's context reads it, from `SSL_CERT_FILE` too,
    as OpenSSL does. A real TLS server on 127.0.0.1, its certificate self-signed: refused
    unless the trust store holds it."""
    key, cert = certificate(tmp_path)
    with FeedServer(tls=(cert, key)) as tls:
        tls.routes["/f.xml"] = feed_file(RSS)
        url = tls.url("/f.xml")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT")}

        def probe(extra: dict[str, str]) -> str:
            return subprocess.run(
                [sys.executable, "-c", HTTPS_PROBE, url],
                env={**env, **extra},
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()

        assert probe({}).startswith("None network the server's TLS certificate was not accepted")
        assert probe({"SSL_CERT_FILE": str(cert)}) == "200 None None"
    assert url.startswith("https://") and len(tls.requests_to("/f.xml")) == 1


def test_a_refused_certificate_on_a_post_is_said_so(tmp_path: Path) -> None:
    key, cert = certificate(tmp_path)
    with FeedServer(tls=(cert, key)) as tls, Fetcher(user_agent="t", host_gap=0) as fetcher:
        result = fetcher.post_form(tls.url("/hub"), {"hub.mode": "publish"})
    assert result.error is FetchError.NETWORK
    assert (result.message or "").startswith("the server's TLS certificate was not accepted")


def test_the_trust_store_is_made_without_a_thread_and_a_failure_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aggregator.feed import fetch

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    store = fetch._TrustStore()
    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", no_thread)
        store.start()  # no thread to be had: nothing pending that nobody will finish
        assert isinstance(store.context(), ssl.SSLContext)
    calls = []

    def failing_once() -> ssl.SSLContext:
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError("no trust store")
        return ssl.create_default_context()

    monkeypatch.setattr(fetch, "_ssl_context", failing_once)
    store = fetch._TrustStore()
    with pytest.raises(FileNotFoundError):
        store.context()
    assert isinstance(store.context(), ssl.SSLContext)  # tried again
    assert len(calls) == 2


def test_only_the_importing_thread_skips_the_trust_store() -> None:
    from aggregator.feed.fetch import _without_trust_stores

    def loaded() -> int:
        return ssl.create_default_context().cert_store_stats()["x509_ca"]

    if not loaded():
        pytest.skip("this system has no trust store to load")
    elsewhere: list[int] = []
    with _without_trust_stores():
        here = loaded()
        thread = threading.Thread(target=lambda: elsewhere.append(loaded()))
        thread.start()
        thread.join()
    assert here == 0 and elsewhere[0] > 0
    assert loaded() > 0  # and put back
