"""Sending digests through a real SMTP server (aiosmtpd on 127.0.0.1), on SQLite and PostgreSQL:
structure and headers, exactly once (a resumed run, a crash, two senders), refusals, catch-up,
and the sign-up and unsubscribe pages."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from aggregator.config import Config, Publishing, Smtp
from aggregator.digest.dispatch import Dispatcher
from aggregator.digest.send import Mailer
from aggregator.digest.subscriptions import Subscriptions
from aggregator.publish.publisher import Publisher
from aggregator.storage import Storage
from aggregator.tokens import CONFIRM, Signer
from aggregator.types import DeliveryStatus, RunStatus, SubscriberStatus
from aggregator.web import WebServer, create_app
from tests.feedserver import certificate
from tests.mailserver import MailServer
from tests.support import Clock
from tests.test_digest import PERIOD, a_daily_schedule, newsroom, stock, ten_minutes_ago, utc
from tests.test_service import free_port
from tests.test_web import Answer, Client

SECRET = "a test secret of some length"
RECIPIENTS = ("ann@example.org", "bob@example.org")


@pytest.fixture
def mail() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock(utc(2026, 11, 23, 6))


def configured(mail: MailServer, **digest: object) -> Config:
    settings = {"recipients": RECIPIENTS, "sender": "news@example.org", **digest}
    config = newsroom(**settings)
    smtp = Smtp(host="127.0.0.1", port=mail.port, security="none", rate=0, retries=2)
    return replace(config, smtp=smtp)


def dispatcher(storage: Storage, config: Config, clock: Clock, owner: str = "w1") -> Dispatcher:
    return Dispatcher(
        storage, config, Signer(SECRET), lambda: Mailer(config.smtp, backoff=0.01), owner, clock
    )


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


def test_each_recipient_gets_one_multipart_message_with_list_headers(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail)
    stock(storage, config, clock)
    storage.add_subscriber("daily", "cat@example.org")
    storage.confirm_subscriber("daily", "cat@example.org")
    storage.add_subscriber("daily", "dan@example.org")  # never confirmed
    report = dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    assert report is not None and (report.sent, report.failed, report.pending) == (3, 0, 0)
    assert sorted(r.recipients[0] for r in mail.received) == [
        "ann@example.org",
        "bob@example.org",
        "cat@example.org",
    ]
    message = mail.to("ann@example.org")[0].message
    assert message["From"] == "The Aggregator <news@example.org>"
    assert message["To"] == "ann@example.org"
    assert message["Subject"] == "Daily briefing: 6 new, 24 Nov 2026"
    assert message["Date"] and re.fullmatch(r"<[^<>@\s]+@example\.org>", message["Message-ID"])
    assert message["List-Id"] == '"Daily briefing" <daily.example.org>'
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
    assert https.startswith("http://news.test/digests/daily/unsubscribe?token=")
    assert mailto.startswith("mailto:news@example.org?subject=unsubscribe")
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text, html = parts(message)
    assert (https in text and https.replace("&", "&amp;") in html) or https in html
    assert "Gaza ceasefire talks hit snag" in text and 'href="https://news.example/w1"' in html
    assert "on the list of recipients" in text
    assert "you subscribed to Daily briefing" in parts(mail.to("cat@example.org")[0].message)[0]
    # a second run of the same period sends nothing
    assert dispatcher(storage, config, clock).run(config.digests[0], PERIOD) is None
    assert len(mail.received) == 3
    runs = storage.digest_runs("daily")
    assert [r.status for r in runs] == [RunStatus.DONE]
    assert {d.recipient for d in storage.deliveries(runs[0].id)} == {
        "ann@example.org",
        "bob@example.org",
        "cat@example.org",
    }


def test_names_and_subjects_outside_ascii_are_encoded(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail, title="Café Ünïcode — 日本")
    config = replace(config, publishing=Publishing(title="Nachrichten für alle"))
    stock(storage, config, clock)
    dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    received = mail.received[0]
    head = received.raw.split(b"\r\n\r\n", 1)[0].decode("ascii")  # headers are 7-bit
    assert "=?utf-8?" in head
    assert received.message["Subject"] == "Café Ünïcode — 日本: 6 new, 24 Nov 2026"
    assert received.message["From"].addresses[0].display_name == "Nachrichten für alle"


def test_a_recipient_written_with_a_name_gets_it_under_that_name(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    """`Zoë <zoe@example.org>` in feeds.yaml: delivered to the address, the name in the To header
    (encoded where it is not ASCII, quoted where it has a comma), one copy each, once."""
    named = ("Zoë Ünïcode <zoe@example.org>", '"Doe, Jane" <jane@example.org>', "bob@example.org")
    config = configured(mail, recipients=named)
    stock(storage, config, clock)
    report = dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    assert report is not None and report.sent == 3
    assert sorted(r.recipients for r in mail.received) == [
        ("bob@example.org",),
        ("jane@example.org",),
        ("zoe@example.org",),
    ]
    (zoe,) = mail.to("zoe@example.org")
    assert zoe.message["To"].addresses[0].display_name == "Zoë Ünïcode"
    assert zoe.message["To"].addresses[0].addr_spec == "zoe@example.org"
    assert b"=?utf-8?" in zoe.raw.split(b"\r\n\r\n", 1)[0]
    (jane,) = mail.to("jane@example.org")
    assert jane.message["To"].addresses[0].display_name == "Doe, Jane"
    (bob,) = mail.to("bob@example.org")
    assert str(bob.message["To"]) == "bob@example.org"
    assert dispatcher(storage, config, clock).run(config.digests[0], PERIOD) is None  # once


def test_refusals_are_recorded_retried_or_resumed(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    recipients = ("ok@example.org", "gone@example.org", "slow@example.org", "down@example.org")
    config = configured(mail, recipients=recipients)
    stock(storage, config, clock)
    mail.handler.refuse["gone@example.org"] = "550 5.1.1 no such user"
    mail.handler.busy["slow@example.org"] = 1  # one 451, then accepted: a retry in this run
    mail.handler.busy["down@example.org"] = 10  # longer than the retries: left for next time
    first = dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    assert first is not None and (first.sent, first.failed, first.pending) == (2, 1, 1)
    [run] = storage.digest_runs("daily")
    assert run.status is RunStatus.SENDING  # open: someone is still owed a copy
    by = {d.recipient: d for d in storage.deliveries(run.id)}
    assert by["gone@example.org"].status is DeliveryStatus.REFUSED
    assert by["gone@example.org"].error == "550 5.1.1 no such user"
    assert by["down@example.org"].status is DeliveryStatus.FAILED
    assert by["down@example.org"].error is not None and by["down@example.org"].error.startswith(
        "451"
    )
    mail.handler.busy["down@example.org"] = 0
    clock.advance(minutes=5)
    [resumed] = dispatcher(storage, config, clock).run_due()
    assert (resumed.sent, resumed.failed, resumed.pending) == (1, 0, 0)
    assert Counter(r.recipients[0] for r in mail.received) == {
        "ok@example.org": 1,
        "slow@example.org": 1,
        "down@example.org": 1,
    }
    assert storage.digest_runs("daily")[0].status is RunStatus.DONE


def test_a_missed_schedule_produces_exactly_one_catch_up_digest(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail)
    stock(storage, config, clock)  # items on the 23rd; the clock is now the 24th, 08:00
    sender = dispatcher(storage, config, clock)
    sender.run(
        config.digests[0], replace(PERIOD, start=utc(2026, 11, 22, 7), end=utc(2026, 11, 23, 7))
    )
    assert len(mail.received) == 2  # the 22nd's digest went out on time
    clock.now = utc(2026, 11, 26, 9)  # the service was down on the 24th, 25th and 26th at 07:00
    reports = sender.run_due()
    assert [(r.period.start, r.period.end) for r in reports] == [
        (utc(2026, 11, 23, 7), utc(2026, 11, 26, 7))
    ]
    caught_up = mail.received[2:]
    assert sorted(r.recipients[0] for r in caught_up) == sorted(RECIPIENTS)
    text = parts(caught_up[0].message)[0]
    assert "Gaza ceasefire talks hit snag" in text  # the 23rd...
    assert "Tomorrow's news" in text  # ...and the 24th, in one e-mail
    assert sender.run_due() == []
    assert len(mail.received) == 4


def test_two_senders_deliver_each_copy_once(
    storage: Storage, mail: MailServer, clock: Clock, database_url: str
) -> None:
    recipients = tuple(f"reader{n}@example.org" for n in range(12))
    config = configured(mail, recipients=recipients)
    stock(storage, config, clock)
    clock.now = utc(2026, 11, 24, 8)
    stores = [Storage.open(database_url, clock=clock) for _ in range(2)]
    senders = [dispatcher(s, config, clock, owner=f"w{n}") for n, s in enumerate(stores)]
    start = threading.Barrier(2)

    def work(sender: Dispatcher) -> None:
        start.wait()
        sender.run_due()

    threads = [threading.Thread(target=work, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.close()
    assert Counter(r.recipients[0] for r in mail.received) == dict.fromkeys(recipients, 1)
    assert [r.status for r in storage.digest_runs("daily")] == [RunStatus.DONE]


def test_an_empty_period_sends_nothing_unless_asked(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail)
    storage.sync_sources(config.sources)
    report = dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    assert report is not None and report.empty and mail.received == []
    assert storage.digest_runs("daily")[0].status is RunStatus.DONE
    loud = configured(mail, skip_empty=False)
    later = replace(PERIOD, start=PERIOD.end, end=PERIOD.end + timedelta(days=1))
    dispatcher(storage, loud, clock).run(loud.digests[0], later)
    assert len(mail.received) == 2
    assert "Nothing new in this period." in parts(mail.received[0].message)[0]


def test_a_sender_killed_mid_run_is_resumed_with_exactly_the_rest(
    tmp_path: Path, mail: MailServer
) -> None:
    from tests.test_cli import aggregator

    recipients = [f"r{n}@example.org" for n in range(10)]
    path = tmp_path / "feeds.yaml"
    path.write_text(
        "sections: [{id: world, title: World}]\n"
        "sources: [{id: herald, url: 'https://herald.example/rss', section: world}]\n"
        f"digests: [{{id: daily, title: Daily, schedule: '{a_daily_schedule()}', filter: {{}},\n"
        f"            recipients: [{', '.join(recipients)}]}}]\n"
        f"smtp: {{host: 127.0.0.1, port: {mail.port}, security: none, from: news@example.org,\n"
        "       rate: 5, connections: 1}\n"  # 200 ms between messages: the kill lands between
        f"storage: {{url: 'sqlite:///{tmp_path / 'a.db'}'}}\n"
    )
    from aggregator.config import load_config
    from tests.publishing import entry

    storage = Storage.open(f"sqlite:///{tmp_path / 'a.db'}", clock=ten_minutes_ago)
    storage.sync_sources(load_config(path).sources)
    storage.save_entries("herald", [entry("n1", "Fresh news", "<p>Body</p>")])
    storage.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "digest", "send", "daily", "-c", str(path)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    # kill it between two sends: once the server has 3 and all 3 are recorded (the sender then
    # waits 200 ms for its next turn), never inside the accepted-but-not-recorded window
    deadline = time.monotonic() + 30
    while not (3 <= _recorded(tmp_path / "a.db") == len(mail.received)):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed_after = len(mail.received)
    assert 3 <= killed_after < 10
    again = aggregator("digest", "send", "daily", "-c", str(path), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{10 - killed_after} sent" in again.stdout
    assert Counter(r.recipients[0] for r in mail.received) == dict.fromkeys(recipients, 1)
    listed = aggregator("digest", "list", "-c", str(path), cwd=tmp_path)
    assert re.search(r"daily .* sent\s+10\s+0\s+0\s", listed.stdout), listed.stdout


def _recorded(database: Path) -> int:
    import sqlite3

    with sqlite3.connect(database, timeout=5) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0


# -- sign-up and unsubscribe pages -------------------------------------------------------------


@pytest.fixture
def site(storage: Storage, mail: MailServer, clock: Clock) -> Iterator[tuple[Client, Config]]:
    config = configured(mail)
    stock(storage, config, clock)
    subscriptions = Subscriptions(
        storage, config, Signer(SECRET), lambda: Mailer(config.smtp, backoff=0.01), clock
    )
    app = create_app(Publisher(storage, config), subscriptions=subscriptions)
    server = WebServer(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield Client(server.port), config
    server.stop()
    thread.join(timeout=10)


def status(storage: Storage, email: str) -> SubscriberStatus | None:
    found = storage.subscriber("daily", email)
    return found.status if found else None


def path_of(url: str) -> str:
    parts_ = urlsplit(url)
    return f"{parts_.path}?{parts_.query}"


def test_double_opt_in_then_one_click_unsubscribe(
    site: tuple[Client, Config], storage: Storage, mail: MailServer, clock: Clock
) -> None:
    client, config = site
    form = client.request("/digests/daily/subscribe")
    assert form.status == 200 and b'name="email"' in form.body
    for body in ("", "email=", "email=not-an-address", "email=" + "x" * 5000):
        bad = _post(client, "/digests/daily/subscribe", body)
        assert bad.status == 400 and b"is not an e-mail address" in bad.body
    assert mail.received == [] and storage.subscribers("daily") == []
    posted = _post(client, "/digests/daily/subscribe", "email=New.Reader%40Example.org")
    assert posted.status == 200 and b"Check your inbox" in posted.body
    subscriber = storage.subscriber("daily", "new.reader@example.org")
    assert subscriber is not None and subscriber.status is SubscriberStatus.PENDING
    [confirmation] = mail.received
    link = re.search(r"http://news\.test/\S+", str(confirmation.message.get_content()))
    assert link is not None and "/digests/daily/confirm?token=" in link.group(0)
    forged = client.request(path_of(link.group(0))[:-3] + "xyz")
    assert forged.status == 400
    assert status(storage, "new.reader@example.org") is SubscriberStatus.PENDING
    # following the link (GET, HEAD: what link scanners do) only asks; the button confirms
    for method in ("GET", "HEAD"):
        asked = client.request(path_of(link.group(0)), method)
        assert asked.status == 200
        assert status(storage, "new.reader@example.org") is SubscriberStatus.PENDING
    confirmed = _post(client, path_of(link.group(0)), "")
    assert confirmed.status == 200 and b"You are subscribed" in confirmed.body
    dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    copy = mail.to("new.reader@example.org")[-1].message  # [0] is the confirmation
    https = re.findall(r"<([^>]+)>", copy["List-Unsubscribe"])[0]
    # GET and HEAD only ask (mail scanners follow links); POST (RFC 8058) unsubscribes
    asked = client.request(path_of(https))
    assert asked.status == 200 and b'<form method="post"' in asked.body
    assert client.request(path_of(https), "HEAD").status == 200
    assert status(storage, "new.reader@example.org") is SubscriberStatus.CONFIRMED
    done = _post(client, path_of(https), "List-Unsubscribe=One-Click")
    assert done.status == 200 and b"You are unsubscribed" in done.body
    assert status(storage, "new.reader@example.org") is SubscriberStatus.UNSUBSCRIBED


def test_a_yaml_recipient_who_unsubscribes_gets_no_more(
    site: tuple[Client, Config], storage: Storage, mail: MailServer, clock: Clock
) -> None:
    client, config = site
    dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    copy = mail.to("ann@example.org")[0].message
    https = re.findall(r"<([^>]+)>", copy["List-Unsubscribe"])[0]
    tampered = https.replace("token=", "token=x")
    assert _post(client, path_of(tampered), "List-Unsubscribe=One-Click").status == 400
    assert _post(client, path_of(https), "List-Unsubscribe=One-Click").status == 200
    clock.advance(days=1)
    later = replace(PERIOD, start=PERIOD.end, end=PERIOD.end + timedelta(days=1))
    dispatcher(storage, config, clock).run(config.digests[0], later)
    assert len(mail.to("ann@example.org")) == 1 and len(mail.to("bob@example.org")) == 2


def test_tokens_are_tied_to_their_purpose_digest_and_age() -> None:
    signer = Signer(SECRET)
    token = signer.sign(CONFIRM, "daily", "a@example.org")
    assert signer.verify(CONFIRM, token) is not None
    assert signer.verify("unsubscribe", token) is None  # another purpose
    assert Signer(SECRET + "!").verify(CONFIRM, token) is None  # another secret
    time.sleep(1.1)
    assert signer.verify(CONFIRM, token, timedelta(seconds=0)) is None  # expired
    with pytest.raises(ValueError, match="at least 16"):
        Signer("short")


def _post(client: Client, path: str, body: str) -> Answer:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    try:
        conn.request(
            "POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        response = conn.getresponse()
        raw = response.getheaders()
        return Answer(response.status, {k.lower(): v for k, v in raw}, response.read(), raw)
    finally:
        conn.close()


# -- the mail server's side: TLS, login, pacing --------------------------------------------------


def test_starttls_and_login_are_used_and_a_wrong_password_stops_the_run(
    tmp_path: Path,
) -> None:
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from tests.mailserver import Handler

    key, cert = certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    sessions: list[tuple[bool, bytes]] = []

    def authenticate(
        server: object, session: object, envelope: object, mechanism: str, data: object
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        tls = getattr(session, "ssl", None) is not None
        sessions.append((tls, data.login if isinstance(data.login, bytes) else data.login.encode()))
        # handled=False: aiosmtpd then answers a failure itself (535)
        return AuthResult(success=data.password in (b"right", "right"), handled=False)

    handler = Handler()
    port = MailServer().port
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
        auth_exclude_mechanism=["LOGIN"],  # smtplib's LOGIN with an initial reply stalls it
    )
    controller.start()
    try:
        client_tls = ssl.create_default_context(cafile=str(cert))
        message = EmailMessage()
        message["Subject"] = "hello"
        message.set_content("x")
        for password, expected in (("right", True), ("wrong", False)):
            settings = Smtp(
                host="127.0.0.1",
                port=port,
                security="starttls",
                username="digest",
                password=password,
                rate=0,
                retries=2,
                timeout=timedelta(seconds=5),
            )
            with Mailer(settings, tls=client_tls, backoff=0.01) as mailer:
                outcome = mailer.send(message, "news@example.org", "ann@example.org")
            assert outcome.sent is expected
            if not expected:  # our login is wrong, not the recipient: nobody can be served
                assert outcome.server_down and not outcome.permanent and outcome.attempts == 3
                assert outcome.error is not None and outcome.error.startswith("mail server: 535")
        assert sessions == [(True, b"digest")] * 4  # inside TLS; the wrong one tried 3 times
        assert len(handler.received) == 1
        # the system's CAs do not know this certificate: no mail goes to an unverified server
        settings = Smtp(host="127.0.0.1", port=port, security="starttls", rate=0, retries=0)
        with Mailer(settings) as mailer:
            refused = mailer.send(message, "news@example.org", "ann@example.org")
        assert (
            not refused.sent
            and not refused.permanent
            and "CERTIFICATE" in (refused.error or "").upper()
        )
    finally:
        controller.stop()


def test_the_rate_spaces_messages_out(mail: MailServer) -> None:
    settings = Smtp(host="127.0.0.1", port=mail.port, security="none", rate=20, connections=1)
    message = EmailMessage()
    message["Subject"] = "paced"
    message.set_content("x")
    started = time.monotonic()
    with Mailer(settings) as mailer:
        for n in range(6):
            assert mailer.send(message, "news@example.org", f"r{n}@example.org").sent
    assert time.monotonic() - started >= 5 / 20  # six messages: five gaps of 50 ms at least


def test_dry_run_and_test_copies_send_and_record_nothing_for_the_period(
    tmp_path: Path, mail: MailServer
) -> None:
    from aggregator.config import load_config
    from tests.publishing import entry
    from tests.test_cli import aggregator

    path = tmp_path / "feeds.yaml"
    path.write_text(
        "sections: [{id: world, title: World}]\n"
        "sources: [{id: herald, url: 'https://herald.example/rss', section: world}]\n"
        f"digests: [{{id: daily, title: Daily, schedule: '{a_daily_schedule()}', filter: {{}},\n"
        "            recipients: [ann@example.org, bob@example.org]}]\n"
        f"smtp: {{host: 127.0.0.1, port: {mail.port}, security: none, from: news@example.org}}\n"
        f"storage: {{url: 'sqlite:///{tmp_path / 'a.db'}'}}\n"
    )
    storage = Storage.open(f"sqlite:///{tmp_path / 'a.db'}", clock=ten_minutes_ago)
    storage.sync_sources(load_config(path).sources)
    storage.save_entries("herald", [entry("n1", "Fresh news", "<p>Body</p>")])
    storage.close()
    dry = aggregator("digest", "send", "daily", "--dry-run", "-c", str(path), cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "ann@example.org (recipient in feeds.yaml): would be sent" in dry.stdout
    assert "nothing was sent" in dry.stdout and mail.received == []
    test = aggregator(
        "digest", "send", "daily", "--to", "editor@example.org", "-c", str(path), cwd=tmp_path
    )
    assert test.returncode == 0, test.stderr
    assert [r.recipients for r in mail.received] == [("editor@example.org",)]
    assert "a test copy" in parts(mail.received[0].message)[0]
    storage = Storage.open(f"sqlite:///{tmp_path / 'a.db'}")
    assert storage.digest_runs("daily") == []  # no period was used up
    storage.close()


def test_the_running_service_sends_a_due_digest_on_its_own(
    tmp_path: Path, mail: MailServer
) -> None:
    from tests.test_ops import get, metric, wait_until
    from tests.test_service import Running, free_port

    port = free_port()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "feeds.yaml").write_text(
        "sections: [{id: world, title: World}]\n"
        "sources: []\n"
        "digests: [{id: minutely, title: Minutely, schedule: '* * * * *', filter: {},\n"
        "            recipients: [ann@example.org], skip_empty: false}]\n"
        f"smtp: {{host: 127.0.0.1, port: {mail.port}, security: none, from: news@example.org}}\n"
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
    )
    service = Running(["run"], cwd=tmp_path)
    try:
        service.wait_for("ready")
        mail.wait_for(1, timeout=60)
        service.wait_for("digest minutely: 0 stories; 1 sent")
        # counted once the tick's run returns, just after its log line
        runs, sent = "aggregator_digest_runs_total", 'outcome="sent"'
        wait_until(lambda: metric(get(f"http://127.0.0.1:{port}/metrics")[2], runs, sent) == 1)
        body = get(f"http://127.0.0.1:{port}/metrics")[2]
        assert metric(body, "aggregator_deliveries_total", 'outcome="sent"') == 1
        assert metric(body, "aggregator_deliveries_total", 'outcome="refused"') == 0
    finally:
        assert service.stop(signal.SIGTERM) == 0
    [received] = mail.received
    assert received.message["Subject"].startswith("Minutely: 0 new")
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o777 == 0o600


def test_the_form_mails_one_address_at_most_once_an_hour(
    site: tuple[Client, Config], storage: Storage, mail: MailServer, clock: Clock
) -> None:
    client, _config = site

    def confirmations() -> int:
        return len([r for r in mail.to("eve@example.org") if "Confirm" in r.message["Subject"]])

    for _ in range(5):  # someone keeps signing a stranger up
        answer = _post(client, "/digests/daily/subscribe", "email=eve%40example.org")
        assert answer.status == 200
        assert b"once an hour" in answer.body
    assert confirmations() == 1
    clock.advance(minutes=59)
    _post(client, "/digests/daily/subscribe", "email=EVE%40example.org")
    assert confirmations() == 1
    clock.advance(minutes=2)
    _post(client, "/digests/daily/subscribe", "email=eve%40example.org")
    assert confirmations() == 2


def test_a_confirmation_that_could_not_be_sent_can_be_asked_again_at_once(
    site: tuple[Client, Config], storage: Storage, mail: MailServer
) -> None:
    client, _config = site
    mail.handler.refuse["kim@example.org"] = "550 5.1.1 no such mailbox"
    assert _post(client, "/digests/daily/subscribe", "email=kim%40example.org").status == 400
    del mail.handler.refuse["kim@example.org"]
    assert _post(client, "/digests/daily/subscribe", "email=kim%40example.org").status == 200
    assert len(mail.to("kim@example.org")) == 1


def test_a_stranger_cannot_sign_an_unsubscribed_address_back_up(
    site: tuple[Client, Config], storage: Storage, mail: MailServer, clock: Clock
) -> None:
    client, config = site
    storage.suppress("daily", "ann@example.org")  # ann, a YAML recipient, left
    assert _post(client, "/digests/daily/subscribe", "email=Ann%40example.org").status == 200
    assert status(storage, "ann@example.org") is SubscriberStatus.PENDING
    dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    assert mail.to("ann@example.org")[-1].message["Subject"].startswith("Confirm")  # only that
    assert [r.recipients for r in mail.received if r.message["Subject"].startswith("Daily")] == [
        ("bob@example.org",)
    ]


def test_a_mail_server_that_refuses_our_login_keeps_the_run_open(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail)
    stock(storage, config, clock)
    down = replace(config, smtp=replace(config.smtp, port=free_port(), retries=1))
    report = dispatcher(storage, down, clock).run(down.digests[0], PERIOD)
    assert report is not None and (report.sent, report.failed) == (0, 0)
    assert report.pending == 2
    [run] = storage.digest_runs("daily")
    assert run.status is RunStatus.SENDING  # nobody was marked refused: the server was away
    assert not any(d.status is DeliveryStatus.REFUSED for d in storage.deliveries(run.id))
    [resumed] = dispatcher(storage, config, clock).run_due()
    assert resumed.sent == 2 and storage.digest_runs("daily")[0].status is RunStatus.DONE


def test_a_mailbox_refused_for_a_day_stops_holding_the_digest_back(
    storage: Storage, mail: MailServer, clock: Clock
) -> None:
    config = configured(mail)
    stock(storage, config, clock)
    mail.handler.busy["bob@example.org"] = 1000
    dispatcher(storage, config, clock).run(config.digests[0], PERIOD)
    clock.advance(days=1, hours=1)
    [late] = dispatcher(storage, config, clock).run_due()  # resumes, gives bob up, finishes
    [done_run, *_] = [r for r in storage.digest_runs("daily") if r.period_start == PERIOD.start]
    assert done_run.status is RunStatus.DONE and late.period.start == PERIOD.start
    bob = next(d for d in storage.deliveries(done_run.id) if d.recipient == "bob@example.org")
    assert bob.status is DeliveryStatus.REFUSED and "still refused after" in (bob.error or "")
    assert len(mail.to("ann@example.org")) == 1
