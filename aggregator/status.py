"""The editors' status page: every source, output and digest, what needs an editor first.

Built from what the database already records (source health, stored items, digest runs and
deliveries) and from the publisher's documents, so it shows the same outputs subscribers get.
Access is open unless the environment sets a token or a user and password: operators set them
where the page faces the internet, and the page says nothing a subscriber could not already see
except error text and delivery addresses, which is why it can be closed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aggregator import __version__
from aggregator.config import Config, Digest
from aggregator.cronwords import describe
from aggregator.digest.periods import edition_schedule, editions, next_run, run_key
from aggregator.exceptions import EnvironmentSettingError
from aggregator.health import Health, SourceHealth, iso, report
from aggregator.publish.publisher import Publisher
from aggregator.storage import Storage, utcnow
from aggregator.templating import render
from aggregator.types import (
    WEEKLY,
    Delivery,
    DeliveryStatus,
    DigestRun,
    RunStatus,
    SubscriberStatus,
)

TOKEN_ENV = "AGGREGATOR_STATUS_TOKEN"
USER_ENV = "AGGREGATOR_STATUS_USER"
PASSWORD_ENV = "AGGREGATOR_STATUS_PASSWORD"
REALM = "aggregator status"
FAILURES_SHOWN = 20  # per digest; `aggregator digest list` prints them all


@dataclass(frozen=True)
class StatusAccess:
    """Who may see /status and /metrics: anyone, or whoever has the token or the password."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> StatusAccess:
        env = os.environ if env is None else env
        token = env.get(TOKEN_ENV, "").strip() or None
        user = env.get(USER_ENV, "").strip() or None
        password = env.get(PASSWORD_ENV, "") or None
        if (user is None) != (password is None):
            raise EnvironmentSettingError(f"set both {USER_ENV} and {PASSWORD_ENV}, or neither")
        return cls(token, user, password)

    @property
    def protected(self) -> bool:
        return self.token is not None or self.user is not None

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate header for a 401: a browser asks for the password."""
        if self.user is not None:
            return f'Basic realm="{REALM}", charset="UTF-8"'
        return f'Bearer realm="{REALM}"'

    def allows(self, authorization: str | None, token: str | None = None) -> bool:
        """`authorization` is the request's header; `token` its `?token=` (for a browser)."""
        if not self.protected:
            return True
        scheme, _, value = (authorization or "").strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if self.token is not None:
            offered = value if scheme == "bearer" else token
            if offered and secrets.compare_digest(offered.encode(), self.token.encode()):
                return True
        if self.user is not None and self.password is not None and scheme == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            same_user = secrets.compare_digest(user.encode(), self.user.encode())
            same_password = secrets.compare_digest(password.encode(), self.password.encode())
            return same_user and same_password
        return False


@dataclass(frozen=True)
class OutputRow:
    kind: str
    id: str
    title: str
    url: str
    entries: int = 0
    limit: int = 0
    last_change: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class DigestRow:
    """A digest's last period and how its copies went: for this page and `digest list`."""

    id: str
    title: str
    schedule: str
    recipients: int
    last: DigestRun | None = None
    sent: int = 0
    refused: int = 0
    retrying: int = 0
    next_run: datetime | None = None
    failures: tuple[Delivery, ...] = ()  # not sent: refused for good, or to be retried

    @property
    def failing(self) -> bool:
        return bool(self.refused or self.retrying)

    @property
    def state(self) -> str:
        if self.last is None:
            return "never sent"
        return "sent" if self.last.status is RunStatus.DONE else "sending"

    def as_json(self) -> dict[str, Any]:
        """For `digest list --json`: the same words as the page, times in ISO 8601 UTC."""
        return {
            "id": self.id,
            "title": self.title,
            "schedule": self.schedule,
            "recipients": self.recipients,
            "state": self.state,
            "period_start": iso(self.period_start),
            "period_end": iso(self.period_end),
            "sent": self.sent,
            "refused": self.refused,
            "retrying": self.retrying,
            "next_run": iso(self.next_run),
            "failures": [
                {
                    "recipient": d.recipient,
                    "state": "refused" if d.status is DeliveryStatus.REFUSED else "retrying",
                    "attempts": d.attempts,
                    "error": d.error,
                }
                for d in self.failures
            ],
        }

    @property
    def period_start(self) -> datetime | None:
        return self.last.period_start if self.last else None

    @property
    def period_end(self) -> datetime | None:
        return self.last.period_end if self.last else None


def failure_text(delivery: Delivery) -> str:
    how = "refused" if delivery.status is DeliveryStatus.REFUSED else "will retry"
    return f"{delivery.recipient} ({how}): {delivery.error}"


def summarise_digest(
    storage: Storage, digest: Digest, now: datetime, edition: str | None = None
) -> DigestRow:
    """Read a digest's (or its weekly edition's) last run and its deliveries and count them."""
    key = run_key(digest, edition)
    runs = storage.digest_runs(key, limit=1)
    last = runs[0] if runs else None
    deliveries = storage.deliveries(last.id) if last is not None else []
    failures = tuple(  # a recipient whose choices left nothing this time is no failure
        d for d in deliveries if d.status not in (DeliveryStatus.SENT, DeliveryStatus.NOTHING)
    )
    refused = sum(1 for d in failures if d.status is DeliveryStatus.REFUSED)
    subscribers = len(storage.subscribers(digest.id, SubscriberStatus.CONFIRMED))
    timed = edition_schedule(digest, edition)
    weekly = sum(c.frequency == WEEKLY for c in storage.choices(digest.id).values())
    everyone = len(digest.recipients) + subscribers
    return DigestRow(
        id=key,
        title=digest.title if edition is None else f"{digest.title} (weekly edition)",
        schedule=describe(timed.schedule, digest.timezone or "UTC"),
        recipients=weekly if edition is not None else everyone - (weekly if digest.weekly else 0),
        last=last,
        sent=sum(d.status is DeliveryStatus.SENT for d in deliveries),
        refused=refused,
        retrying=len(failures) - refused,
        next_run=next_run(timed, now),
        failures=failures,
    )


@dataclass(frozen=True)
class StatusView:
    generated_at: datetime
    sources: tuple[SourceHealth, ...]
    outputs: tuple[OutputRow, ...]
    digests: tuple[DigestRow, ...]
    queue_lag: float
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def attention(self) -> int:
        """Sources an editor should look at: failing, gone, moved or malformed."""
        calm = (Health.OK, Health.NEW, Health.PAUSED, Health.REMOVED)
        return sum(1 for s in self.sources if s.health not in calm)

    @property
    def moved(self) -> tuple[SourceHealth, ...]:
        """Sources whose feed answered a permanent redirect."""
        return tuple(
            s
            for s in self.sources
            if s.state.moved and s.state.in_config and not s.state.discovered
        )

    @property
    def discovered(self) -> tuple[SourceHealth, ...]:
        """Sources whose url is a web page, polled at the feed found on it."""
        return tuple(
            s for s in self.sources if s.state.moved and s.state.in_config and s.state.discovered
        )


def ago(moment: datetime | None, now: datetime) -> str:
    """'3 min ago', 'in 2 h': how people read times on a dashboard (the exact time is in the
    title attribute)."""
    if moment is None:
        return "never"
    delta = (moment - now).total_seconds()
    seconds = abs(delta)
    if seconds < 45:
        text = "now" if seconds < 5 else f"{int(seconds)} s"
    elif seconds < 3600:
        text = f"{round(seconds / 60)} min"
    elif seconds < 2 * 86400:
        text = f"{seconds / 3600:.1f} h".replace(".0 h", " h")
    else:
        text = f"{round(seconds / 86400)} days"
    if text == "now":
        return text
    return f"in {text}" if delta > 0 else f"{text} ago"


class StatusBoard:
    """Reads everything the page shows, in a few queries however many sources there are."""

    def __init__(
        self,
        storage: Storage,
        config: Callable[[], Config],
        publisher: Publisher | None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.storage = storage
        self.config = config
        self.publisher = publisher
        self.clock = clock

    def view(self) -> StatusView:
        config = self.config()
        now = self.clock()
        states = self.storage.sources()
        rows = report(states, self.storage.item_counts(), config.polling.unhealthy_after)
        found = Counter(r.health.value for r in rows)
        counts = {h.value: found[h.value] for h in Health if found[h.value]}  # worst first
        return StatusView(
            generated_at=now,
            sources=tuple(rows),
            outputs=tuple(self._outputs()),
            digests=tuple(sorted(self._digests(config, now), key=lambda d: not d.failing)),
            queue_lag=self.storage.queue_lag(),
            counts=counts,
        )

    def _outputs(self) -> list[OutputRow]:
        publisher = self.publisher
        if publisher is None:
            return []
        rows = []
        for publication in publisher.catalog:
            fmt = publication.formats[0]
            path = f"{publication.kind}/{publication.id}"
            url = f"{publisher.base}{path}.{fmt}"
            try:
                document = publisher.feed(publication.kind, publication.id, fmt)
            except Exception as exc:  # one broken output must not hide the rest
                rows.append(
                    OutputRow(
                        publication.kind, publication.id, publication.title, url, error=str(exc)
                    )
                )
                continue
            rows.append(
                OutputRow(
                    publication.kind,
                    publication.id,
                    publication.title,
                    url,
                    document.entries,
                    publication.limit,
                    document.last_modified,
                )
            )
        return rows

    def _digests(self, config: Config, now: datetime) -> list[DigestRow]:
        return [
            summarise_digest(self.storage, digest, now, edition)
            for digest in config.digests
            for edition in editions(digest)
        ]

    def html(self) -> bytes:
        view = self.view()
        config = self.config()
        return render(
            "status.html",
            view=view,
            now=view.generated_at,
            ago=ago,
            failure_text=failure_text,
            failures_shown=FAILURES_SHOWN,
            site_title=config.publishing.title,
            version=__version__,
            alternates=(),
            lag=_duration(timedelta(seconds=view.queue_lag)),
        ).encode()

    def json(self) -> bytes:
        view = self.view()
        data: dict[str, Any] = {
            "generated_at": view.generated_at.isoformat(),
            "queue_lag_seconds": round(view.queue_lag, 1),
            "counts": view.counts,
            "sources": [s.as_json() for s in view.sources],
            "outputs": [
                {
                    "kind": o.kind,
                    "id": o.id,
                    "url": o.url,
                    "entries": o.entries,
                    "last_change": o.last_change.isoformat() if o.last_change else None,
                    "error": o.error,
                }
                for o in view.outputs
            ],
            "digests": [
                {
                    "id": d.id,
                    "state": d.state,
                    "period_start": d.period_start.isoformat() if d.period_start else None,
                    "period_end": d.period_end.isoformat() if d.period_end else None,
                    "sent": d.sent,
                    "refused": d.refused,
                    "retrying": d.retrying,
                    "next_run": d.next_run.isoformat() if d.next_run else None,
                    "failures": [failure_text(f) for f in d.failures],
                }
                for d in view.digests
            ],
        }
        return json.dumps(data, ensure_ascii=False, indent=1).encode()


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds // 60 % 60} min"
