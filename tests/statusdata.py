"""A newsroom with many sources in every state, stored the way polling stores them, for the
status page's browser test and its README screenshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator.config import load_config
from aggregator.feed.parse import parse_document
from aggregator.storage import Storage
from aggregator.types import DeliveryStatus, Entry, FetchRecord
from tests.support import rss

UNHEALTHY = ("bbc-arabic", "reuters-africa")
FAILING = ("le-monde-international",)
GONE = ("old-wire",)
MOVED = ("dw-english", "npr-world")
WARNING = ("valley-star",)


def entries(name: str, count: int, now: datetime) -> tuple[Entry, ...]:
    if not count:
        return ()
    return parse_document(rss(name, count), f"https://{name}.example/feed.xml", now).entries


def source_id(n: int) -> str:
    return f"outlet-{n:04d}"


def write_config(path: Path, count: int, port: int) -> None:
    named = [*UNHEALTHY, *FAILING, *GONE, *MOVED, *WARNING]
    ids = named + [source_id(n) for n in range(count - len(named))]
    sources = "".join(
        f"  - {{id: {sid}, url: 'https://{sid}.example/feed.xml', section: world}}\n" for sid in ids
    )
    path.write_text(
        "publishing: {title: Newsroom}\n"
        "sections: [{id: world, title: World}]\n"
        "topics: [{id: climate, title: Climate, keywords: [climate]}]\n"
        f"sources:\n{sources}"
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        "outputs: [{id: front-page, title: Front page, filter: {every_item: true}}]\n"
        "smtp: {host: 127.0.0.1, port: 2525, from: digest@example.org}\n"
        "digests:\n"
        "  - {id: morning, title: Morning briefing, schedule: '0 7 * * *', output: front-page,"
        " recipients: [desk@example.org]}\n"
        "  - {id: weekly, title: Climate weekly, schedule: '0 8 * * 1',"
        " filter: {topics: [climate]}, recipients: [a@example.org, gone@example.org]}\n"
    )


def seed(config_path: Path, database: str, now: datetime | None = None) -> None:
    """Store every source's last poll: most fine, a few failing, gone, moved or malformed."""
    now = now or datetime.now(UTC)
    config = load_config(config_path)
    storage = Storage.open(database)
    try:
        storage.sync_sources(config.sources)
        for i, source in enumerate(config.sources):
            sid = source.id
            when = now - timedelta(minutes=1 + i % 14)
            due = when + timedelta(minutes=15)
            if sid in UNHEALTHY or sid in FAILING:
                times = 6 if sid in UNHEALTHY else 2
                for k in range(times):
                    storage.record_fetch(
                        FetchRecord(
                            sid,
                            when - timedelta(minutes=15 * (times - k)),
                            due,
                            status=503 if sid == "bbc-arabic" else None,
                            ok=False,
                            error="HTTP 503 Service Unavailable"
                            if sid == "bbc-arabic"
                            else "timed out after 30 s",
                        )
                    )
                continue
            if sid in GONE:
                storage.record_fetch(
                    FetchRecord(
                        sid,
                        when,
                        due,
                        status=410,
                        ok=False,
                        gone=True,
                        error="HTTP 410 Gone: the publisher removed this feed; polling stopped",
                    )
                )
                continue
            record = FetchRecord(
                sid,
                when,
                due,
                status=200,
                entry_count=3,
                permanent_url=f"https://feeds.{sid}.example/rss" if sid in MOVED else None,
                warning="not well-formed XML (line 3): read what could be read"
                if sid in WARNING
                else None,
            )
            storage.record_fetch(record, entries(sid, 3 if i < 300 else 0, now))
        weekly = storage.claim_digest_run(
            "weekly", now - timedelta(days=7), now - timedelta(hours=2), "seed", timedelta(0)
        )
        morning = storage.claim_digest_run(
            "morning", now - timedelta(days=1), now - timedelta(hours=3), "seed", timedelta(0)
        )
        assert weekly is not None and morning is not None
        with storage.delivery_log(weekly.id) as log:
            log("a@example.org", DeliveryStatus.SENT, None, "<1@example.org>")
            log("gone@example.org", DeliveryStatus.REFUSED, "550 5.1.1 no such mailbox")
        with storage.delivery_log(morning.id) as log:
            log("desk@example.org", DeliveryStatus.SENT, None, "<2@example.org>")
        storage.finish_digest_run(weekly.id)
        storage.finish_digest_run(morning.id)
    finally:
        storage.close()
