"""The HTTP app as readers meet it: a real uvicorn server on 127.0.0.1, real requests.

Covers content types, strong ETags and Last-Modified, 304s, gzip, HEAD, 404/400 (never 500),
freshness after new items, paging, the index and preview pages, OPML, WebSub pings, the static
export, and an ETag that survives restarting `aggregator web`.
"""

from __future__ import annotations

import gzip
import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree

from aggregator.config import Config, load_config
from aggregator.exceptions import StorageError
from aggregator.feed.fetch import Fetcher
from aggregator.opml import read_opml
from aggregator.process.pipeline import Processor
from aggregator.publish.export import export
from aggregator.publish.publisher import Document, Publisher
from aggregator.publish.websub import Announcer
from aggregator.storage import Storage
from aggregator.web import WebServer, create_app
from tests.feedserver import FeedServer, Reply
from tests.publishing import BASE, entry, fill, newsroom, serving
from tests.support import Clock
from tests.test_service import Running, free_port

ATOM = "{http://www.w3.org/2005/Atom}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: list[tuple[str, str]]


class Client:
    """Raw HTTP/1.1 on one kept-alive connection: what went over the wire, undecoded."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, path: str, method: str = "GET", **headers: str) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
            response = conn.getresponse()
            body = response.read()
            raw = response.getheaders()
            return Answer(response.status, {k.lower(): v for k, v in raw}, body, raw)
        finally:
            conn.close()


@pytest.fixture
def config() -> Config:
    return newsroom(limit=3)


@pytest.fixture
def processor(storage: Storage, config: Config) -> Processor:
    proc = Processor(config)
    storage.sync_sources(config.sources)
    fill(storage, proc)
    return proc


@pytest.fixture
def publisher(storage: Storage, config: Config, processor: Processor, clock: Clock) -> Publisher:
    return Publisher(storage, config, clock=clock)


@pytest.fixture
def client(publisher: Publisher) -> Iterator[Client]:
    with serving(create_app(publisher, refresh=0.1)) as port:
        yield Client(port)


TYPES = {
    "/feeds/all.atom": "application/atom+xml; charset=utf-8",
    "/feeds/all.rss": "application/rss+xml; charset=utf-8",
    "/feeds/all.json": "application/feed+json; charset=utf-8",
    "/sections/world.atom": "application/atom+xml; charset=utf-8",
    "/topics/climate.json": "application/feed+json; charset=utf-8",
    "/feeds/all": "text/html; charset=utf-8",
    "/feeds/all.html": "text/html; charset=utf-8",
    "/": "text/html; charset=utf-8",
    "/opml": "text/x-opml; charset=utf-8",
    "/opml.xml": "text/x-opml; charset=utf-8",
}


def test_health_and_readiness(client: Client) -> None:
    for path, body in (("/healthz", {"status": "ok"}), ("/readyz", None)):
        answer = client.request(path)
        assert answer.status == 200, path
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "no-store"
        if body is not None:
            assert json.loads(answer.body) == body
    assert json.loads(client.request("/readyz").body) == {
        "status": "ready",
        "checks": {"database": "ok"},  # a web-only app has no scheduler to report
    }


def test_every_document_has_its_type_a_strong_etag_and_caching_headers(client: Client) -> None:
    for path, media_type in TYPES.items():
        answer = client.request(path)
        assert answer.status == 200, path
        assert answer.headers["content-type"] == media_type, path
        assert re.fullmatch(r'"[A-Za-z0-9_-]{24}"', answer.headers["etag"]), path
        assert answer.headers["cache-control"] == "public, max-age=300"
        assert answer.headers["vary"] == "Accept-Encoding"
        assert int(answer.headers["content-length"]) == len(answer.body) > 0
    answer = client.request("/feeds/all.atom")
    modified = parsedate_to_datetime(answer.headers["last-modified"])
    assert modified.year == 2026 and modified <= parsedate_to_datetime(answer.headers["date"])
    assert [name.lower() for name, _ in answer.raw].count("date") == 1


def test_conditional_requests_are_answered_with_304(client: Client) -> None:
    first = client.request("/feeds/all.atom")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for condition in (
        {"If_None_Match": etag},
        {"If_None_Match": f'"other", {etag}'},
        {"If_None_Match": f"W/{etag}"},
        {"If_None_Match": "*"},
        {"If_Modified_Since": modified},
        {
            "If_Modified_Since": format_datetime(
                parsedate_to_datetime(modified).replace(year=2027), usegmt=True
            )
        },
    ):
        answer = client.request("/feeds/all.atom", **condition)
        assert answer.status == 304, condition
        assert answer.body == b""
        assert answer.headers["etag"] == etag
    for condition in (
        {"If_None_Match": '"other"'},
        {"If_None_Match": '"other"', "If_Modified_Since": modified},  # the ETag decides
        {"If_Modified_Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
        {"If_Modified_Since": "yesterday-ish"},
    ):
        assert client.request("/feeds/all.atom", **condition).status == 200, condition


def test_gzip_is_its_own_representation(client: Client) -> None:
    plain = client.request("/feeds/all.rss")
    packed = client.request("/feeds/all.rss", Accept_Encoding="gzip, deflate, br")
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert gzip.decompress(packed.body) == plain.body
    assert len(packed.body) < len(plain.body)
    assert packed.headers["etag"] != plain.headers["etag"]
    again = client.request(
        "/feeds/all.rss", Accept_Encoding="gzip", If_None_Match=packed.headers["etag"]
    )
    assert again.status == 304 and again.headers["etag"] == packed.headers["etag"]
    refused = client.request("/feeds/all.rss", Accept_Encoding="gzip;q=0")
    assert "content-encoding" not in refused.headers
    # a tag names one representation: the gzip tag does not validate the plain one
    other = client.request("/feeds/all.rss", If_None_Match=packed.headers["etag"])
    assert other.status == 200 and other.body == plain.body


def test_head_gives_the_headers_of_get_without_a_body(client: Client) -> None:
    for path in ("/feeds/all.json", "/", "/sections/world"):
        got = client.request(path)
        head = client.request(path, "HEAD")
        assert head.status == 200 and head.body == b""
        for name in ("content-type", "etag", "content-length", "cache-control"):
            assert head.headers.get(name) == got.headers.get(name), (path, name)


BAD = {
    "/feeds/nope.atom": 404,
    "/feeds/nope": 404,
    "/sections/nope.rss": 404,
    "/places/all.atom": 404,
    "/feeds/all.xml": 404,
    "/feeds/gaza-wire.rss": 404,  # that output is published as Atom and JSON only
    "/feeds/all.atom/extra": 404,
    "/nothing": 404,
    "/feeds/all.atom?before=yesterday": 400,
    "/feeds/all.json?before=1.2.3": 400,
    "/feeds/all?before=%00%ff": 400,
    "/feeds/all.atom?before=" + "9" * 200: 400,
    "/feeds/%2e%2e%2fetc%2fpasswd.atom": 404,
    "/feeds/all.atom?before=%C2%B2.1": 400,  # a digit to str.isdigit, not to int()
    "/feeds/all.atom?before=1.9223372036854775808": 400,  # beyond a 64-bit id
    "/feeds/all.atom?utm_source=x": 200,  # unknown parameters are ignored
}


def test_unknown_addresses_are_404_and_bad_parameters_400_never_500(client: Client) -> None:
    for path, status in BAD.items():
        answer = client.request(path)
        assert answer.status == status, path
        if status != 200:
            assert answer.headers["content-type"] == "text/html; charset=utf-8"
            assert b"See every feed this site publishes" in answer.body
    posted = client.request("/feeds/all.atom", "POST")
    assert posted.status == 405
    assert {m.strip() for m in posted.headers["allow"].split(",")} == {"GET", "HEAD"}
    for answer in (posted, client.request("/nothing")):
        assert "date" in answer.headers and answer.headers["cache-control"] == "no-store"


def test_new_items_reach_the_feed_without_a_restart(
    client: Client, storage: Storage, processor: Processor, clock: Clock
) -> None:
    before = client.request("/sections/world.json")
    clock.advance(hours=1)
    storage.save_entries("herald", [entry("fresh", "Fresh news", "<p>New today</p>")], processor)
    deadline = time.monotonic() + 10
    while True:
        after = client.request("/sections/world.json", If_None_Match=before.headers["etag"])
        if after.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert after.status == 200
    assert json.loads(after.body)["items"][0]["title"] == "Fresh news"


def test_paging_over_http_reaches_every_story_once(client: Client) -> None:
    titles: list[str] = []
    path: str | None = "/feeds/all.atom"
    pages = 0
    while path:
        document = etree.fromstring(client.request(path).body)
        titles += [e.findtext(f"{ATOM}title") or "" for e in document.iter(f"{ATOM}entry")]
        links = {link.get("rel"): link.get("href") for link in document.findall(f"{ATOM}link")}
        path = (
            urlsplit(links["next"]).path + "?" + urlsplit(links["next"]).query
            if "next" in links
            else None
        )
        pages += 1
        assert pages < 10
    assert len(titles) == len(set(titles)) == 8  # six herald stories, the Gaza story, the blog
    assert pages == 3


def test_index_and_preview_pages_offer_every_feed_for_autodiscovery(
    client: Client, publisher: Publisher
) -> None:
    index = client.request("/").body.decode()
    discovered = set(
        re.findall(r'<link rel="alternate" type="([^"]+)" title="[^"]*" href="([^"]+)"', index)
    )
    expected = {
        (media, url)
        for publication in publisher.catalog
        for _fmt, media, url in __import__("aggregator.publish.view", fromlist=["Links"])
        .Links(BASE, publication)
        .alternates()
    }
    assert discovered == expected
    assert 'href="http://news.test/opml.xml"' in index
    page = client.request("/feeds/all").body.decode()
    assert '<link rel="alternate" type="application/atom+xml"' in page
    assert "Gaza ceasefire talks hit snag" in page and "Also reported by" in page
    assert 'rel="next"' in page  # older stories are a click away


def test_opml_lists_every_publication(client: Client, publisher: Publisher) -> None:
    feeds = read_opml(client.request("/opml").body)
    assert len(feeds) == len(publisher.catalog) == 3 + 2 + 2
    assert {f.url for f in feeds} >= {f"{BASE}feeds/all.atom", f"{BASE}topics/climate.atom"}
    assert {f.categories for f in feeds} == {("Feeds",), ("Sections",), ("Topics",)}


# -- WebSub ------------------------------------------------------------------------------------


def test_websub_hub_is_advertised_and_pinged_once_per_change(
    storage: Storage, clock: Clock
) -> None:
    with FeedServer() as hub_server:
        hub_server.routes["/hub"] = lambda _request: Reply(202, b"")
        hub = hub_server.url("/hub")
        config = newsroom(hub=hub)
        processor = Processor(config)
        storage.sync_sources(config.sources)
        fill(storage, processor)
        fetcher = Fetcher(user_agent="test", host_gap=0)
        workers = [
            Announcer(Publisher(storage, config, clock=clock), hub, fetcher.post_form)
            for _ in range(2)
        ]
        first = workers[0].run_once()
        assert len(first) == 3 + 3 + 2 + 2 * 3 + 2 * 3  # every format of every publication
        assert workers[1].run_once() == []  # the other worker knows it was announced
        assert workers[0].run_once() == []
        pings = [parse_qs(r.body.decode()) for r in hub_server.requests_to("/hub")]
        assert pings[0]["hub.mode"] == ["publish"]
        assert {p["hub.url"][0] for p in pings} == set(first)
        clock.advance(hours=1)
        storage.save_entries("blog", [entry("b9", "Opinion piece", "<p>x</p>")], processor)
        changed = workers[1].run_once() + workers[0].run_once()
        assert sorted(changed) == sorted(
            f"{BASE}{key}.{fmt}"
            for key in ("feeds/all", "feeds/copies", "sections/opinion")
            for fmt in ("atom", "rss", "json")
        )
        atom = etree.fromstring(Publisher(storage, config).feed("feeds", "all", "atom").body)
        assert {"hub": hub}.items() <= {
            link.get("rel"): link.get("href") for link in atom.findall(f"{ATOM}link")
        }.items()
        fetcher.close()


def test_a_hub_that_is_down_is_logged_and_retried_on_the_next_change(
    storage: Storage, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    hub = f"http://127.0.0.1:{free_port()}/hub"  # nothing listens there
    config = newsroom(hub=hub)
    processor = Processor(config)
    storage.sync_sources(config.sources)
    fill(storage, processor)
    with Fetcher(user_agent="test", host_gap=0, timeout=2) as fetcher:
        assert Announcer(Publisher(storage, config), hub, fetcher.post_form).run_once() == []
    assert "refused the ping" in caplog.text and "refused the connection" in caplog.text


# -- static export -----------------------------------------------------------------------------


def test_export_writes_every_document_and_swaps_the_directory_whole(
    storage: Storage, config: Config, processor: Processor, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    report = export(Publisher(storage, config, paged=False), out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert report.files == len(files) == 2 + 7 + (3 + 3 + 2 + 2 * 3 + 2 * 3)  # pages, feeds
    assert {
        "index.html",
        "opml.xml",
        "feeds/all.atom",
        "feeds/all.html",
        "topics/climate.json",
    } <= set(files)
    live = Publisher(storage, config)
    exported = (out / "feeds" / "all.json").read_bytes()
    assert (
        json.loads(exported)["items"] == json.loads(live.feed("feeds", "all", "json").body)["items"]
    )
    assert "next_url" not in json.loads(exported)  # ?before= pages cannot be files
    assert b'rel="next"' not in (out / "feeds" / "all.atom").read_bytes()
    (out / "stale.txt").write_text("from an old export")
    inode = out.stat().st_ino
    export(Publisher(storage, config, paged=False), out)
    assert not (out / "stale.txt").exists() and out.stat().st_ino != inode
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site.")]


class FailingPublisher(Publisher):
    """The database goes away halfway through an export."""

    def every_document(self) -> Iterator[tuple[str, Document]]:
        documents = super().every_document()
        yield next(documents)
        raise StorageError("the database went away")


def test_a_failed_export_leaves_the_previous_one_in_place(
    storage: Storage, config: Config, processor: Processor, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    export(Publisher(storage, config, paged=False), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(StorageError):
        export(FailingPublisher(storage, config, paged=False), out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".site.")]


# -- the real commands -------------------------------------------------------------------------

YAML = """\
sections: [{id: world, title: World}]
sources: [{id: herald, url: 'https://herald.example/rss', section: world, title: Herald}]
outputs: [{id: all, title: Everything}]
server: {host: 127.0.0.1, port: PORT, base_url: 'http://news.test/'}
storage: {url: 'sqlite:///DB'}
"""


def _wait_for_port(port: int, service: Running) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert service.process.poll() is None, "\n".join(service.seen)
        try:
            Client(port).request("/")
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("aggregator web did not start")


def test_aggregator_web_keeps_its_etags_across_restarts_and_export_writes_files(
    tmp_path: Path,
) -> None:
    port = free_port()
    path = tmp_path / "feeds.yaml"
    path.write_text(YAML.replace("PORT", str(port)).replace("DB", str(tmp_path / "a.db")))
    config = load_config(path)
    storage = Storage.open(config.storage.url)
    storage.sync_sources(config.sources)
    processor = Processor(config)
    for n in range(5):
        storage.save_entries(
            "herald", [entry(f"k{n}", f"Story {n}", f"<p>Text {n}</p>")], processor
        )
    storage.close()
    seen = []
    for _ in range(2):
        service = Running(["web", "-c", str(path)], cwd=tmp_path)
        try:
            _wait_for_port(port, service)
            answer = Client(port).request("/feeds/all.atom")
            assert answer.status == 200
            seen.append((answer.headers["etag"], answer.body))
        finally:
            assert service.stop(signal.SIGTERM) == 0
    assert seen[0] == seen[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "aggregator",
            "export",
            "--out",
            str(tmp_path / "site"),
            "-c",
            str(path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 10 files" in done.stdout  # index, OPML, 2 pages, 2 x 3 feeds
    assert (tmp_path / "site" / "feeds" / "all.atom").read_bytes() == seen[0][1]


def test_a_database_outage_serves_what_is_cached_and_503_for_the_rest(
    tmp_path: Path, clock: Clock
) -> None:
    config = newsroom()
    storage = Storage.open(f"sqlite:///{tmp_path / 'gone.db'}", clock=clock)
    storage.sync_sources(config.sources)
    fill(storage, Processor(config))
    server = WebServer(create_app(Publisher(storage, config), refresh=0.05), "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        client = Client(server.port)
        cached = client.request("/feeds/all.atom")
        assert cached.status == 200
        (tmp_path / "gone.db").unlink()
        storage._engine.dispose()  # the next connection finds an empty file: no tables
        time.sleep(0.3)  # the revision watcher fails (and logs) a few times meanwhile
        again = client.request("/feeds/all.atom")
        assert again.status == 200 and again.body == cached.body
        missing = client.request("/topics/climate.atom")
        assert missing.status == 503
        assert b"Temporarily unavailable" in missing.body
        alive = client.request("/healthz")  # the process is alive...
        assert alive.status == 200 and json.loads(alive.body) == {"status": "ok"}
        ready = client.request("/readyz")  # ...but cannot serve everything
        assert ready.status == 503
        assert json.loads(ready.body)["checks"]["database"].startswith("unreachable")
    finally:
        server.stop()
        thread.join(timeout=10)
        storage.close()


def test_editors_templates_replace_the_pages_too(
    storage: Storage, config: Config, processor: Processor, clock: Clock, tmp_path: Path
) -> None:
    """`publishing.templates` holds the editors' own pages: a frame of their own (base.html)
    reaches every page, and feed.html replaces the preview."""
    (tmp_path / "base.html").write_text(
        "<!doctype html><title>{% block title %}{% endblock %}</title>"
        "<body class=house-style>{% block body %}{% endblock %}</body>\n"
    )
    (tmp_path / "feed.html").write_text(
        '{% extends "base.html" %}{% block body %}<h1>Ours: {{ title }}</h1>'
        "{% for e in entries %}<p>{{ e.title }}</p>{% endfor %}{% endblock %}\n"
    )
    own = replace(config, publishing=replace(config.publishing, templates=str(tmp_path)))
    publisher = Publisher(storage, own, clock=clock)
    page = publisher.page("feeds", "all").body.decode()
    assert page.startswith("<!doctype html><title>")
    assert "<body class=house-style><h1>Ours: Everything</h1><p>" in page
    index = publisher.index().body.decode()
    assert "class=house-style" in index  # the built-in index.html, in the editors' frame
    assert "/feeds/all.atom" in index
    assert "class=house-style" in publisher.error(404, "Not found", "Nothing here.").decode()
