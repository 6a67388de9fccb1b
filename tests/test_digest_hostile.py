"""Digests under hostile conditions, with real parts: a sender SIGKILLed while copies are in
flight (the aggregator in a subprocess, aiosmtpd on 127.0.0.1), addresses and links the `email`
package would RFC 2047-encode (messages received by aiosmtpd and parsed back), and an old
confirmation link followed after its owner left (the real web app)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from aggregator.config import Config, Server, Smtp, load_config
from aggregator.digest.compose import compose
from aggregator.digest.dispatch import Dispatcher
from aggregator.digest.periods import Period
from aggregator.digest.send import Mailer
from aggregator.digest.subscriptions import Subscriptions
from aggregator.publish.publisher import Publisher
from aggregator.storage import Storage
from aggregator.tokens import Signer
from aggregator.types import DeliveryStatus, RunStatus, SubscriberStatus
from aggregator.web import create_app
from tests.mailserver import Handler, Received
from tests.publishing import entry, serving
from tests.support import Clock
from tests.test_cli import aggregator
from tests.test_digest import PERIOD, a_daily_schedule, newsroom, stock, ten_minutes_ago
from tests.test_digest_send import SECRET, _post, path_of
from tests.test_web import Client

# -- a real SMTP server that can kill the sender, and take addresses outside ASCII ------------


@dataclass
class KillingHandler(Handler):
    """Keeps every message like the test server, and SIGKILLs `victim` the moment the
    `kill_at`-th one is in: the server holds that copy (and any other the second connection
    was handing over), but the sender never hears its 250 nor records it."""

    kill_at: int = 0
    victim: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        reply = await super().handle_DATA(server, session, envelope)
        with self.lock:
            count = len(self.received)
        if count == self.kill_at and self.victim:
            os.kill(self.victim, signal.SIGKILL)
        return reply


@contextmanager
def smtp_server(handler: Handler, *, utf8: bool = True) -> Iterator[int]:
    """aiosmtpd on a free port, with SMTPUTF8 (RFC 6531) offered unless `utf8` is False."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=utf8)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def smtp_config(port: int, **digest: object) -> Config:
    settings = {"sender": "news@example.org", **digest}
    smtp = Smtp(host="127.0.0.1", port=port, security="none", rate=0, retries=1)
    return replace(newsroom(**settings), smtp=smtp)


def dispatcher(storage: Storage, config: Config, clock: Any) -> Dispatcher:
    return Dispatcher(
        storage, config, Signer(SECRET), lambda: Mailer(config.smtp, backoff=0.01), "w1", clock
    )


def header(raw: bytes, name: str) -> bytes:
    """One header field's body as it went over the wire, unfolded (CRLF + space -> space)."""
    head = re.sub(rb"\r\n[ \t]+", b" ", raw.split(b"\r\n\r\n", 1)[0])
    [line] = [x for x in head.split(b"\r\n") if x.lower().startswith(name.lower().encode() + b":")]
    return line.split(b":", 1)[1].strip()


# -- a sender killed with copies in flight ----------------------------------------------------


def _digest_yaml(tmp_path: Path, port: int, recipients: list[str]) -> Path:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "sections: [{id: world, title: World}]\n"
        "sources: [{id: herald, url: 'https://herald.example/rss', section: world}]\n"
        f"digests: [{{id: daily, title: Daily, schedule: '{a_daily_schedule()}', filter: {{}},\n"
        f"            recipients: [{', '.join(recipients)}]}}]\n"
        f"smtp: {{host: 127.0.0.1, port: {port}, security: none, from: news@example.org,\n"
        "       rate: 0, connections: 2}\n"
        f"storage: {{url: 'sqlite:///{tmp_path / 'a.db'}'}}\n"
    )
    storage = Storage.open(f"sqlite:///{tmp_path / 'a.db'}", clock=ten_minutes_ago)
    storage.sync_sources(load_config(path).sources)
    storage.save_entries("herald", [entry("n1", "Fresh news", "<p>Body</p>")])
    storage.close()
    return path


def _sender(path: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "digest", "send", "daily", "-c", str(path)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _message_ids(received: list[Received]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for copy in received:
        ids.setdefault(copy.recipients[0], []).append(str(copy.message["Message-ID"]))
    return ids


def _assert_duplicates_are_the_same_message(received: list[Received], most: int) -> None:
    """Nobody missed, at most `most` recipients with a second copy, and a second copy always
    carries the first one's Message-ID (mail clients then show one)."""
    ids = _message_ids(received)
    doubled = {address: found for address, found in ids.items() if len(found) > 1}
    assert len(doubled) <= most, doubled
    for address, found in doubled.items():
        assert len(set(found)) == 1, f"{address} got copies with different Message-IDs: {found}"


@pytest.mark.parametrize("kill_at", [1, 5])
def test_a_copy_in_flight_at_a_kill_is_sent_again_with_the_same_message_id(
    tmp_path: Path, kill_at: int
) -> None:
    recipients = [f"r{n}@example.org" for n in range(8)]
    handler = KillingHandler(kill_at=kill_at)
    with smtp_server(handler) as port:
        path = _digest_yaml(tmp_path, port, recipients)
        process = _sender(path, tmp_path)
        handler.victim = process.pid
        assert process.wait(timeout=60) == -signal.SIGKILL
        handler.victim = 0
        held = [r.recipients[0] for r in handler.received]
        storage = Storage.open(f"sqlite:///{tmp_path / 'a.db'}")
        [run] = storage.digest_runs("daily")
        rows = {d.recipient: d for d in storage.deliveries(run.id)}
        storage.close()
        # a copy the server holds is recorded sent with the Message-ID it carried, or was in
        # flight at the kill (at most one per connection; the one that triggered it among them)
        in_flight: set[str] = set()
        for copy in handler.received:
            row = rows.get(copy.recipients[0])
            if row is None:
                in_flight.add(copy.recipients[0])
            else:
                assert row.status is DeliveryStatus.SENT
                assert row.message_id == copy.message["Message-ID"]
        assert held[kill_at - 1] in in_flight and len(in_flight) <= 2
        again = aggregator("digest", "send", "daily", "-c", str(path), cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "same Message-ID" in again.stdout + again.stderr
    received = handler.received
    assert set(Counter(r.recipients[0] for r in received)) == set(recipients)
    _assert_duplicates_are_the_same_message(received, most=len(in_flight))
    doubled = {a for a, n in Counter(r.recipients[0] for r in received).items() if n > 1}
    assert doubled == in_flight  # the copies in flight, and nothing else, went twice
    storage = Storage.open(f"sqlite:///{tmp_path / 'a.db'}")
    [run] = storage.digest_runs("daily")
    assert run.status is RunStatus.DONE
    assert {d.status for d in storage.deliveries(run.id)} == {DeliveryStatus.SENT}
    storage.close()


def test_four_kills_at_random_moments_double_nothing_but_in_flight_copies(
    tmp_path: Path,
) -> None:
    """The issue's case: SIGKILL during a send over two connections, four times over."""
    recipients = [f"r{n}@example.org" for n in range(60)]
    handler = Handler()
    with smtp_server(handler) as port:
        path = _digest_yaml(tmp_path, port, recipients)
        kills = 0
        for _ in range(4):
            before = len(handler.received)
            process = _sender(path, tmp_path)
            deadline = time.monotonic() + 60
            while len(handler.received) < before + 5 and process.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.0005)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait(timeout=30)
        assert kills >= 1
        final = aggregator("digest", "send", "daily", "-c", str(path), cwd=tmp_path)
        assert final.returncode == 0, final.stdout + final.stderr
    assert set(Counter(r.recipients[0] for r in handler.received)) == set(recipients)
    _assert_duplicates_are_the_same_message(handler.received, most=2 * kills)


# -- List-Unsubscribe stays plain ASCII ---------------------------------------------------------

UNSUBSCRIBE_HEADER = re.compile(rb"<(https?://[!-;=?-~]+)>, <(mailto:[!-;=?-~]+)>")


def _check_list_unsubscribe(copy: Received) -> str:
    """The header is `<https...>, <mailto:...>` in ASCII on the wire and parsed back; the https
    link is returned."""
    wire = header(copy.raw, "List-Unsubscribe")
    assert wire.isascii() and b"=?" not in wire, wire
    found = UNSUBSCRIBE_HEADER.fullmatch(wire)
    assert found is not None, wire
    parsed = str(copy.message["List-Unsubscribe"])
    assert parsed == wire.decode("ascii")
    assert header(copy.raw, "List-Unsubscribe-Post") == b"List-Unsubscribe=One-Click"
    return found.group(1).decode("ascii")


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 23, 6, tzinfo=UTC))


@contextmanager
def web(storage: Storage, config: Config, clock: Any) -> Iterator[Client]:
    subscriptions = Subscriptions(
        storage, config, Signer(SECRET), lambda: Mailer(config.smtp, backoff=0.01), clock
    )
    app = create_app(Publisher(storage, config), subscriptions=subscriptions)
    with serving(app) as port:
        yield Client(port)


def test_list_unsubscribe_is_ascii_for_ascii_idn_and_utf8_addresses_and_test_copies(
    storage: Storage, clock: Clock
) -> None:
    handler = Handler()
    plain, utf8, idn = "ann@example.org", "jürgen@example.org", "zoe@bücher.example"
    with smtp_server(handler) as port:
        config = smtp_config(port, recipients=(plain, utf8))
        stock(storage, config, clock)
        storage.add_subscriber("daily", idn)
        storage.confirm_subscriber("daily", idn)
        sender = dispatcher(storage, config, clock)
        report = sender.run(config.digests[0], PERIOD)
        assert report is not None and (report.sent, report.failed) == (3, 0)
        view = compose(storage, config, config.digests[0], PERIOD)
        assert sender.send_test(config.digests[0], view, "editor@example.org")  # digest send --to
        assert sender.send_test(config.digests[0], view, "rédaction@example.org")
        copies = {r.recipients[0]: r for r in handler.received}
        assert set(copies) == {plain, utf8, idn, "editor@example.org", "rédaction@example.org"}
        links = {}
        for address, copy in copies.items():
            assert copy.message["To"] == address
            links[address] = _check_list_unsubscribe(copy)
            html = copy.message.get_body(("html",))
            assert html is not None and links[address] in str(html.get_content())
        # one click works for each of them, addresses outside ASCII included
        with web(storage, config, clock) as client:
            for address in (plain, utf8, idn):
                done = _post(client, path_of(links[address]), "List-Unsubscribe=One-Click")
                assert done.status == 200 and b"You are unsubscribed" in done.body
                found = storage.subscriber("daily", address)
                assert found is not None and found.status is SubscriberStatus.UNSUBSCRIBED


def test_a_base_url_outside_ascii_is_percent_encoded_in_list_unsubscribe(
    storage: Storage, clock: Clock
) -> None:
    handler = Handler()
    with smtp_server(handler) as port:
        config = smtp_config(port, recipients=("ann@example.org",))
        config = replace(config, server=Server(base_url="http://news.test/bücher/"))
        stock(storage, config, clock)
        dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
        view = compose(storage, config, config.digests[0], PERIOD)
        assert dispatcher(storage, config, clock).send_test(config.digests[0], view, "e@x.org")
    for copy in handler.received:
        https = _check_list_unsubscribe(copy)
        assert https.startswith("http://news.test/b%C3%BCcher/digests/daily/unsubscribe?token=")


def test_an_address_outside_ascii_is_refused_for_good_by_a_server_without_smtputf8(
    storage: Storage, clock: Clock
) -> None:
    handler = Handler()
    with smtp_server(handler, utf8=False) as port:
        config = smtp_config(port, recipients=("ann@example.org", "jürgen@example.org"))
        stock(storage, config, clock)
        report = dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    assert report is not None and (report.sent, report.failed, report.pending) == (1, 1, 0)
    assert [r.recipients for r in handler.received] == [("ann@example.org",)]
    [run] = storage.digest_runs("daily")
    refused = {d.recipient: d for d in storage.deliveries(run.id)}["jürgen@example.org"]
    assert refused.status is DeliveryStatus.REFUSED and refused.attempts == 1
    assert "SMTPUTF8" in (refused.error or "")


# -- an old confirmation link after leaving -----------------------------------------------------


@dataclass
class RealClock:
    """Real time, which confirmation links are signed with, moved on by hand past the hourly
    limit on confirmation mails."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _confirm_link(handler: Handler, address: str) -> str:
    mails = [
        r for r in handler.received if address in r.recipients and "Confirm" in r.message["Subject"]
    ]
    link = re.search(r"http://news\.test/\S+", str(mails[-1].message.get_content()))
    assert link is not None
    return path_of(link.group(0))


def test_a_confirmation_link_from_before_unsubscribing_neither_resubscribes_nor_lies(
    database_url: str,
) -> None:
    handler = Handler()
    address = "reader@example.org"
    now = RealClock()
    with smtp_server(handler) as port, closing(Storage.open(database_url, clock=now)) as storage:
        config = smtp_config(port, recipients=(), skip_empty=False)
        storage.sync_sources(config.sources)
        with web(storage, config, now) as client:
            assert _post(client, "/digests/daily/subscribe", f"email={address}").status == 200
            old = _confirm_link(handler, address)
            assert b"You are subscribed" in _post(client, old, "").body
            period = Period(now() - timedelta(hours=1), now())
            dispatcher(storage, config, now).run(config.digests[0], period)
            https = re.findall(r"<([^>]+)>", handler.received[-1].message["List-Unsubscribe"])[0]
            assert _post(client, path_of(https), "List-Unsubscribe=One-Click").status == 200
            # the old link, opened (GET) and pressed (POST): the truth, and a way back in
            for method in ("GET", "POST"):
                answer = client.request(old) if method == "GET" else _post(client, old, "")
                assert answer.status == (200 if method == "GET" else 409)
                assert b"You are subscribed" not in answer.body
                assert f"{address} is unsubscribed".encode() in answer.body
                assert b'action="http://news.test/digests/daily/subscribe"' in answer.body
                assert b'name="email"' in answer.body and b">Confirm<" not in answer.body
                assert storage.subscriber("daily", address).status is (  # type: ignore[union-attr]
                    SubscriberStatus.UNSUBSCRIBED
                )
            # someone signs the address up again: the old link still confirms nothing...
            time.sleep(1.1)  # links carry their time in whole seconds
            now.offset = timedelta(minutes=61)  # past the limit of one confirmation an hour
            assert _post(client, "/digests/daily/subscribe", f"email={address}").status == 200
            new = _confirm_link(handler, address)
            assert new != old
            stale = _post(client, old, "")
            assert stale.status == 409 and f"{address} is unsubscribed".encode() in stale.body
            found = storage.subscriber("daily", address)
            assert found is not None and found.status is SubscriberStatus.PENDING
            assert dispatcher(storage, config, now).recipients(config.digests[0]) == []
            # ...and the new one, sent after the unsubscribe, does
            assert client.request(new).status == 200
            confirmed = _post(client, new, "")
            assert confirmed.status == 200 and b"You are subscribed" in confirmed.body
            found = storage.subscriber("daily", address)
            assert found is not None and found.status is SubscriberStatus.CONFIRMED
            assert dispatcher(storage, config, now).recipients(config.digests[0]) == [
                (address, True)
            ]
