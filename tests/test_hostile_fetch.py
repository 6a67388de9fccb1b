"""Fetching from a hostile server on 127.0.0.1: trickles, bombs and bad redirects stay bounded."""

from __future__ import annotations

import gzip
import json
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli
import pytest

from aggregator.config import load_text
from aggregator.feed.fetch import Fetcher, FetchError, FetchRequest
from aggregator.poll import Poller
from aggregator.storage import Storage
from tests.hostileserver import HostileServer, body, trickle_body, trickle_headers
from tests.support import rss
from tests.test_ops import get
from tests.test_service import Running, free_port

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer() as running:
        yield running


def _wait_for(predicate: object, seconds: float = 10.0) -> None:
    give_up = time.monotonic() + seconds
    while not predicate() and time.monotonic() < give_up:  # type: ignore[operator]
        time.sleep(0.01)


@pytest.mark.parametrize("script", [trickle_body, trickle_headers])
def test_a_trickling_server_is_cut_off_at_the_deadline(
    server: HostileServer, script: object
) -> None:
    # A byte every 50 ms never trips a per-read timeout of 1 s; only a deadline over the whole
    # fetch stops it. The script would write 2,000 bytes (100 s) if the client stayed.
    server.scripts["/slow"] = script(server, "/slow")  # type: ignore[operator]
    with Fetcher(user_agent="t", timeout=1.0, host_gap=0.0) as fetcher:
        result = fetcher.fetch(FetchRequest(server.url("/slow")))
    assert result.error is FetchError.TIMEOUT and result.message == "timed out after 1s"
    _wait_for(lambda: server.sent.get("/slow", 0) > 0)
    time.sleep(0.3)  # the script notices the closed socket at its next write
    assert 0 < server.sent["/slow"] < 200


def test_waiting_for_a_host_slot_is_not_counted_against_the_deadline(
    server: HostileServer,
) -> None:
    payload = rss("fine", 2)
    server.scripts["/slow"] = trickle_body(server, "/slow")
    server.scripts["/fine"] = body(payload, {"Content-Type": "application/rss+xml"})
    with Fetcher(user_agent="t", timeout=1.0, per_host=1, host_gap=0.0) as fetcher:
        results: dict[str, object] = {}
        slow = threading.Thread(
            target=lambda: results.update(slow=fetcher.fetch(FetchRequest(server.url("/slow"))))
        )
        slow.start()
        _wait_for(lambda: "/slow" in server.requests)
        fine = fetcher.fetch(FetchRequest(server.url("/fine")))  # waits its turn, about 1 s
        slow.join()
    assert results["slow"].error is FetchError.TIMEOUT  # type: ignore[attr-defined]
    assert fine.error is None and fine.status == 200 and fine.body == payload
    assert fine.seconds < 1.0  # its own time on the wire, not the wait for the slot


def _bomb_brotli(size: int) -> bytes:
    compressor = brotli.Compressor(quality=1)
    block = b"a" * MiB
    parts = [compressor.process(block) for _ in range(size // MiB)]
    return bytes(b"".join(parts) + compressor.finish())


def _bomb_gzip(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * MiB
    return b"".join(compressor.compress(block) for _ in range(size // MiB)) + compressor.flush()


_BOMB_CLIENT = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from aggregator.feed.fetch import Fetcher, FetchRequest
urls = sys.argv[1:]
with Fetcher(user_agent="t", timeout=30, max_bytes=1024 * 1024, host_gap=0, per_host=8) as f:
    with ThreadPoolExecutor(len(urls)) as pool:
        results = list(pool.map(lambda u: f.fetch(FetchRequest(u)), urls))
print(json.dumps({
    "errors": [r.error and r.error.value for r in results],
    "messages": [r.message for r in results],
    # VmHWM, not ru_maxrss: the latter keeps the RSS of the forked parent across exec
    "peak_kib": next(
        int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")
    ),
}))
"""


def test_compression_bombs_are_cut_off_as_they_decode(server: HostileServer) -> None:
    # 512 MiB of one letter in about 100 KB of brotli, and eight gzip bombs of 256 MiB each at
    # once: decoding them whole (as httpx does a chunk at a time) costs gigabytes. The client
    # runs in its own process so its peak memory is its own.
    server.scripts["/br"] = body(_bomb_brotli(512 * MiB), {"Content-Encoding": "br"})
    gz = _bomb_gzip(256 * MiB)
    for n in range(8):
        server.scripts[f"/gz{n}"] = body(gz, {"Content-Encoding": "gzip"})
    urls = [server.url("/br"), *(server.url(f"/gz{n}") for n in range(8))]
    done = subprocess.run(
        [sys.executable, "-c", _BOMB_CLIENT, *urls],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["errors"] == ["too_large"] * 9
    assert all("larger than the limit of 1,048,576 bytes" in m for m in report["messages"])
    assert report["peak_kib"] < 200 * 1024, report  # the interpreter and httpx take about 60 MiB


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-zlib.MAX_WBITS)),  # raw, as some send it
        ("br", brotli.compress),
        ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),
    ],
)
def test_every_encoding_we_ask_for_decodes(
    server: HostileServer, encoding: str, encode: object
) -> None:
    payload = rss("enc", 30)
    server.scripts["/feed"] = body(encode(payload), {"Content-Encoding": encoding})  # type: ignore[operator]
    with Fetcher(user_agent="t", timeout=5.0, host_gap=0.0) as fetcher:
        result = fetcher.fetch(FetchRequest(server.url("/feed")))
    assert result.error is None and result.body == payload


def test_a_body_that_does_not_decode_or_an_encoding_never_asked_is_a_clear_error(
    server: HostileServer,
) -> None:
    server.scripts["/broken"] = body(b"not gzip at all", {"Content-Encoding": "gzip"})
    server.scripts["/zstd"] = body(b"(\xb5/\xfd", {"Content-Encoding": "zstd"})
    with Fetcher(user_agent="t", timeout=5.0, host_gap=0.0) as fetcher:
        broken = fetcher.fetch(FetchRequest(server.url("/broken")))
        zstd = fetcher.fetch(FetchRequest(server.url("/zstd")))
    assert broken.error is FetchError.NETWORK
    assert (broken.message or "").startswith("the body does not decode as gzip")
    assert zstd.error is FetchError.NETWORK
    assert zstd.message == "the server used Content-Encoding 'zstd', which was not asked"


@pytest.mark.parametrize(
    "target",
    [
        "file:///etc/passwd",
        "ftp://example.org/feed",
        "javascript:alert(1)",
        "data:,x",
        "http://[oops/",
    ],
)
def test_a_redirect_off_the_web_is_refused_and_never_a_permanent_move(
    server: HostileServer, target: str
) -> None:
    server.scripts["/feed"] = body(b"", {"Location": target}, status="301 Moved Permanently")
    with Fetcher(user_agent="t", timeout=5.0, host_gap=0.0) as fetcher:
        result = fetcher.fetch(FetchRequest(server.url("/feed")))
    assert result.error is FetchError.INVALID_URL and result.permanent_url is None
    if target.startswith(("file", "ftp")):
        assert result.message == f"redirected (301) to a URL that is not http(s): {target}"


def test_a_redirect_off_the_web_after_a_real_move_keeps_only_the_real_move(
    server: HostileServer,
) -> None:
    server.scripts["/old"] = body(b"", {"Location": "/new"}, status="301 Moved Permanently")
    server.scripts["/new"] = body(b"", {"Location": "file:///etc/passwd"}, status="308 Moved")
    with Fetcher(user_agent="t", timeout=5.0, host_gap=0.0) as fetcher:
        result = fetcher.fetch(FetchRequest(server.url("/old")))
    assert result.error is FetchError.INVALID_URL
    assert result.permanent_url == server.url("/new")


def test_a_poll_with_a_trickling_source_ends_and_the_others_are_stored(
    server: HostileServer, storage: Storage
) -> None:
    server.scripts["/slow"] = trickle_body(server, "/slow")
    server.scripts["/moved"] = body(b"", {"Location": "file:///etc/passwd"}, "301 Moved")
    for name in ("a", "b", "c"):
        server.scripts[f"/{name}"] = body(rss(name, 3), {"Content-Type": "application/rss+xml"})
    sources = "".join(
        f"  - {{id: {p}, url: '{server.url('/' + p)}', section: world}}\n"
        for p in ("slow", "moved", "a", "b", "c")
    )
    config = load_text(
        "sections: [{id: world, title: World}]\n"
        f"sources:\n{sources}"
        "polling: {timeout: 1s, host_gap: 0s, per_host: 1, concurrency: 4}\n",
        "test.yaml",
        env={},
    )
    storage.sync_sources(config.sources)
    with Fetcher(user_agent="t", timeout=1.0, per_host=1, host_gap=0.0) as fetcher:
        poller = Poller(storage, config, fetcher, owner="w", rng=random.Random(1))
        results = {r.source_id: r for r in poller.run_once()}
    assert results["slow"].kind == "timeout" and not results["slow"].ok
    # Three sources queued behind the slow one for the single slot on this host; none failed.
    assert all(results[n].ok and results[n].new == 3 for n in ("a", "b", "c"))
    assert results["moved"].kind == "invalid_url" and results["moved"].moved_to is None
    state = {s.id: s for s in storage.sources()}
    assert state["moved"].fetch_url == server.url("/moved")


def test_a_running_service_goes_on_polling_and_stops_on_sigterm_beside_a_trickle(
    server: HostileServer, tmp_path: Path
) -> None:
    # The issue: one trickling source kept `aggregator run` from polling anything else and from
    # ending on SIGTERM. With a 2 s deadline, the other source is polled again and again while
    # the trickle is cut off, and SIGTERM ends the process.
    server.scripts["/slow"] = trickle_body(server, "/slow")
    server.scripts["/fine"] = body(rss("fine", 2), {"Content-Type": "application/rss+xml"})
    port = free_port()
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "sections: [{id: world, title: World}]\n"
        "sources:\n"
        f"  - {{id: slow, url: '{server.url('/slow')}', section: world, interval: 30s}}\n"
        f"  - {{id: fine, url: '{server.url('/fine')}', section: world, interval: 30s}}\n"
        "polling: {timeout: 2s, host_gap: 0s, per_host: 1, concurrency: 2}\n"
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
    )
    service = Running(["run", "--config", str(config)], cwd=tmp_path)
    try:
        service.wait_for("ready")
        timed_out = service.wait_for("source slow: ")
        assert "timed out after 2s" in timed_out
        service.wait_for("source fine: 200")
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=30) == 0
    finally:
        if service.process.poll() is None:
            service.process.kill()
    assert server.sent["/slow"] < 200  # cut off, not read to the end
