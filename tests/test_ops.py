"""What operators rely on, against the running service: metrics, JSON logs, protected status and
metrics, config reload (file change, SIGHUP, invalid file), graceful SIGTERM, worker probes."""

from __future__ import annotations

import base64
import json
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aggregator.service import ConfigFile, Listen, Service
from aggregator.storage import Storage
from tests.feedserver import FeedServer, Reply, Request, feed_file
from tests.support import rss
from tests.test_service import Running, free_port


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers.items()), exc.read()


def _lower(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in pairs}


def metric(body: bytes, name: str, labels: str = "") -> float:
    """One sample of a Prometheus text page (`labels` as written: outcome="ok")."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    raise AssertionError(f"{wanted} not in the metrics:\n{body.decode()}")


def write_config(
    path: Path,
    server: FeedServer,
    feeds: list[str],
    port: int,
    outputs: str = "outputs: [{id: all, title: All, filter: {every_item: true}}]\n",
    polling: str = "polling: {host_gap: 0s}\n",
) -> None:
    sources = "".join(
        f"  - {{id: {name}, url: '{server.url(f'/{name}.xml')}', section: world}}\n"
        for name in feeds
    )
    path.write_text(
        f"sections: [{{id: world, title: World}}]\nsources:\n{sources}{polling}"
        f"server: {{host: 127.0.0.1, port: {port}}}\n{outputs}"
    )


@contextmanager
def running(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, ready: str = "ready"
) -> Iterator[Running]:
    service = Running(args, cwd=cwd, env=env)
    try:
        service.wait_for(ready)
        yield service
    finally:
        if service.process.poll() is None:
            assert service.stop(signal.SIGTERM) == 0, "\n".join(service.seen)


def wait_until(check: object, timeout: float = 20) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def test_metrics_and_json_logs_describe_every_fetch(tmp_path: Path) -> None:
    with FeedServer() as server:
        server.routes["/first.xml"] = feed_file(rss("first", 5), etag='"1"')
        server.routes["/copy.xml"] = feed_file(rss("first", 5), etag='"2"')  # same links
        # /broken.xml has no route: a 404
        port = free_port()
        config = tmp_path / "feeds.yaml"
        write_config(config, server, ["first", "copy", "broken"], port)
        args = ["--log-format", "json", "run", "--config", str(config)]
        with running(args, tmp_path) as service:
            for name in ("first", "copy", "broken"):
                service.wait_for(f'"source": "{name}"')
            status, headers, body = get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            assert headers["content-type"].startswith("text/plain; version=0.0.4")
            assert metric(body, "aggregator_fetches_total", 'outcome="ok"') == 2
            assert metric(body, "aggregator_fetches_total", 'outcome="http_error"') == 1
            assert metric(body, "aggregator_fetches_total", 'outcome="timeout"') == 0
            assert metric(body, "aggregator_fetch_duration_seconds_count") == 3
            assert metric(body, "aggregator_items_ingested_total") == 10
            assert metric(body, "aggregator_duplicates_merged_total") == 5
            assert metric(body, "aggregator_digest_runs_total", 'outcome="sent"') == 0
            assert metric(body, "aggregator_deliveries_total", 'outcome="sent"') == 0
            lag = metric(body, "aggregator_queue_lag_seconds")
            assert 0 <= lag < 60
        lines = [json.loads(line) for line in service.seen if line.startswith("{")]
        assert len(lines) == len(service.seen), "every log line is one JSON object"
        fetches = {line["source"]: line for line in lines if line.get("event") == "fetch"}
        assert fetches["first"]["status"] == 200
        assert fetches["first"]["new"] == 5
        # whichever of the two was stored second joined the other's stories
        assert fetches["first"]["merged"] + fetches["copy"]["merged"] == 5
        assert fetches["broken"]["status"] == 404
        assert fetches["broken"]["ok"] is False
        assert "404" in fetches["broken"]["error"]
        for line in fetches.values():
            assert isinstance(line["duration"], float)
            assert line["level"] in ("info", "warning")
            assert re.match(r"\d{4}-\d\d-\d\dT", line["time"])


def test_status_and_metrics_are_closed_by_a_token(tmp_path: Path) -> None:
    with FeedServer() as server:
        server.routes["/first.xml"] = feed_file(rss("first", 2))
        port = free_port()
        config = tmp_path / "feeds.yaml"
        write_config(config, server, ["first"], port)
        base = f"http://127.0.0.1:{port}"
        env = {"AGGREGATOR_STATUS_TOKEN": "s3cret-token"}
        with running(["run", "--config", str(config)], tmp_path, env):
            for path in ("/status", "/status.json", "/metrics"):
                status, headers, _ = get(base + path)
                assert status == 401, path
                assert headers["www-authenticate"].startswith("Bearer")
                assert get(base + path, {"Authorization": "Bearer wrong"})[0] == 401
                assert get(base + path, {"Authorization": "Bearer s3cret-token"})[0] == 200
            # a valid header with a wrong ?token= sets no cookie
            answer = get(base + "/status?token=garbage", {"Authorization": "Bearer s3cret-token"})
            assert answer[0] == 200
            assert "set-cookie" not in answer[1]
            status, headers, body = get(base + "/status?token=s3cret-token")
            assert status == 200
            assert b"<h1>" in body
            assert headers["cache-control"] == "no-store"
            cookie = headers["set-cookie"].split(";")[0]
            assert "HttpOnly" in headers["set-cookie"]
            status, _, body = get(base + "/status.json", {"Cookie": cookie})
            assert status == 200
            assert json.loads(body)["sources"][0]["id"] == "first"
            # probes and feeds stay open
            assert get(base + "/healthz")[0] == 200
            assert get(base + "/readyz")[0] == 200
            assert get(base + "/feeds/all.atom")[0] == 200


def test_status_takes_basic_auth(tmp_path: Path) -> None:
    with FeedServer() as server:
        port = free_port()
        config = tmp_path / "feeds.yaml"
        write_config(config, server, ["first"], port)
        base = f"http://127.0.0.1:{port}"
        env = {"AGGREGATOR_STATUS_USER": "editor", "AGGREGATOR_STATUS_PASSWORD": "pa:ss wörd"}

        def basic(user: str, password: str) -> dict[str, str]:
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}

        with running(["web", "--config", str(config)], tmp_path, env):
            status, headers, _ = get(base + "/status")
            assert status == 401
            assert headers["www-authenticate"] == 'Basic realm="aggregator status", charset="UTF-8"'
            assert get(base + "/status", basic("editor", "wrong"))[0] == 401
            assert get(base + "/status", basic("someone", "pa:ss wörd"))[0] == 401
            assert get(base + "/status", {"Authorization": "Basic !!!"})[0] == 401
            assert get(base + "/status", basic("editor", "pa:ss wörd"))[0] == 200
            assert get(base + "/metrics", basic("editor", "pa:ss wörd"))[0] == 200


def test_half_set_basic_auth_is_refused_at_start(tmp_path: Path) -> None:
    with FeedServer() as server:
        config = tmp_path / "feeds.yaml"
        write_config(config, server, ["first"], free_port())
        env = {"AGGREGATOR_STATUS_USER": "editor"}
        service = Running(["web", "--config", str(config)], cwd=tmp_path, env=env)
        assert service.process.wait(timeout=60) == 1
        service.wait_for("set both AGGREGATOR_STATUS_USER and AGGREGATOR_STATUS_PASSWORD")


def test_reload_applies_a_valid_config_and_keeps_running_on_an_invalid_one(
    tmp_path: Path,
) -> None:
    with FeedServer() as server:
        for name in ("first", "second", "third"):
            server.routes[f"/{name}.xml"] = feed_file(rss(name, 3), etag=f'"{name}"')
        port = free_port()
        config = tmp_path / "feeds.yaml"
        base = f"http://127.0.0.1:{port}"
        write_config(config, server, ["first", "second"], port)
        with running(["run", "--config", str(config)], tmp_path) as service:
            service.wait_for("source second: 200")
            assert get(base + "/feeds/extra.atom")[0] == 404
            # a valid change: a source added, one removed, an output added
            outputs = (
                "outputs:\n  - {id: all, title: All, filter: {every_item: true}}\n"
                "  - {id: extra, title: Extra, filter: {sources: [third]}}\n"
            )
            write_config(config, server, ["first", "third"], port, outputs)
            line = service.wait_for("config reloaded (feeds.yaml changed)")
            assert "2 sources (1 added, 0 changed, 1 removed), 2 outputs" in line
            service.wait_for("source third: 200")
            wait_until(lambda: b"third story 2" in get(base + "/feeds/extra.atom")[2])
            states = json.loads(get(base + "/status.json")[2])["sources"]
            assert {s["id"]: s["status"] for s in states}["second"] == "removed"
            assert len(server.requests_to("/second.xml")) == 1  # never polled again
            # SIGHUP with the file as it is: validated and applied again
            service.process.send_signal(signal.SIGHUP)
            service.wait_for("config reloaded (SIGHUP)")
            # an invalid file: every problem reported, the running config kept
            config.write_text(config.read_text().replace("id: third,", "id: Third Feed,"))
            problem = service.wait_for("config not reloaded: ")
            assert re.search(rf"{re.escape(str(config))}:\d+:\d+: sources\[1\]\.id", problem)
            service.wait_for("still running the previous config")
            assert get(base + "/feeds/extra.atom")[0] == 200
            assert get(base + "/readyz")[0] == 200
            assert service.process.poll() is None


@contextmanager
def slow_feeds(delay: float) -> Iterator[FeedServer]:
    with FeedServer() as server:
        for name in ("slow-0", "slow-1", "slow-2"):

            def route(_request: Request, name: str = name) -> Reply:
                return Reply(200, rss(name, 2), {"Content-Type": "application/rss+xml"}, delay)

            server.routes[f"/{name}.xml"] = route
        yield server


def test_sigterm_lets_the_fetch_in_flight_finish_and_releases_the_rest(tmp_path: Path) -> None:
    with slow_feeds(delay=3) as server:
        port = free_port()
        config = tmp_path / "feeds.yaml"
        names = ["slow-0", "slow-1", "slow-2"]
        write_config(config, server, names, port, polling="polling: {concurrency: 1}\n")
        service = Running(["run", "--config", str(config)], cwd=tmp_path)
        try:
            service.wait_for("ready")
            wait_until(lambda: len(server.log) == 1)  # one fetch started, the others queued
            service.process.send_signal(signal.SIGTERM)
            assert service.process.wait(timeout=30) == 0
        finally:
            if service.process.poll() is None:
                service.process.kill()
        service.wait_for("received SIGTERM")
        finished = service.wait_for(": 200 in ")
        assert service.seen.index(finished) > service.seen.index(
            service.wait_for("received SIGTERM")
        )
        assert len(server.log) == 1
        store = Storage.open(f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}", upgrade=False)
        try:
            states = {s.id: s for s in store.sources()}
            fetched = [s for s in states.values() if s.last_success_at is not None]
            assert len(fetched) == 1  # stored, though the stop came mid-fetch
            assert store.count_items() == 2
            assert all(s.lease_owner is None for s in states.values()), "no stranded lease"
        finally:
            store.close()


def test_worker_answers_probes_and_metrics_on_its_port(tmp_path: Path) -> None:
    with FeedServer() as server:
        server.routes["/first.xml"] = feed_file(rss("first", 2))
        port, web_port = free_port(), free_port()
        config = tmp_path / "feeds.yaml"
        write_config(config, server, ["first"], web_port)
        base = f"http://127.0.0.1:{port}"
        with running(["worker", "--config", str(config), "--port", str(port)], tmp_path) as w:
            w.wait_for("source first: 200")
            assert get(base + "/healthz") == (200, get(base + "/healthz")[1], b'{"status":"ok"}')
            status, _, body = get(base + "/readyz")
            assert status == 200
            assert json.loads(body)["checks"] == {"database": "ok", "scheduler": "ok"}
            status, _, body = get(base + "/metrics")
            assert metric(body, "aggregator_fetches_total", 'outcome="ok"') == 1
            assert get(base + "/status")[0] == 404
            assert get(base + "/feeds/all.atom")[0] == 404


def test_port_from_the_command_line_moves_the_default_base_url(tmp_path: Path) -> None:
    with FeedServer() as server:
        config = tmp_path / "feeds.yaml"
        write_config(config, server, ["first"], free_port())  # not the one used
        port = free_port()
        env = {"AGGREGATOR_PORT": str(port)}
        with running(["web", "--config", str(config)], tmp_path, env) as service:
            assert f"serving feeds at http://127.0.0.1:{port}/" in service.wait_for("serving")
            status, _, body = get(f"http://127.0.0.1:{port}/feeds/all.atom")
            assert status == 200
            assert f'href="http://127.0.0.1:{port}/feeds/all.atom"'.encode() in body


def test_a_workers_probe_port_is_not_the_sites_address(tmp_path: Path) -> None:
    """`worker --port` binds the probes only: e-mail links and WebSub pings still name the site."""
    with FeedServer() as server:
        config = tmp_path / "feeds.yaml"
        site_port, probes = free_port(), free_port()
        write_config(config, server, ["first"], site_port)
        worker = Service(config, "worker", Listen("127.0.0.1", probes))
        try:
            assert worker.config.server.base_url == f"http://127.0.0.1:{site_port}/"
            assert worker.web is not None and worker.web.port == probes
        finally:
            worker.stop()
        web = Service(config, "web", Listen(None, probes))
        try:
            assert web.config.server.base_url == f"http://127.0.0.1:{probes}/"
        finally:
            web.stop()


def test_a_config_change_stays_pending_until_it_was_dealt_with(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("sources: []\n")
    watched = ConfigFile(path)
    assert not watched.changed()
    path.write_text("sources: []\n")  # the same text saved again
    assert not watched.changed()
    path.write_text("sources: []  # edited\n")
    assert watched.changed()
    assert watched.changed(), "a reload that failed (database away) is tried again"
    watched.seen()
    assert not watched.changed()
    # saved again while a reload read the file before: still a change afterwards
    before = watched.state()
    path.write_text("sources: []  # edited twice\n")
    watched.seen(before)
    assert watched.changed()
