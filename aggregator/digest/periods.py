"""Which period a digest covers next: explicit (start, end) pairs, never a gap, never an overlap.

A period ends at a time the schedule fired and starts where the previous one ended, so a service
that was down over one or more send times sends one digest covering all it missed. A run still
being sent (a crash mid-send) is resumed with its own period. A digest's first period starts at
the schedule's previous firing, so the first e-mail holds one interval's news, not all history.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from aggregator.config import Digest
from aggregator.scheduling import last_fire_time, next_fire_time
from aggregator.types import WEEKLY, DigestRun, RunStatus

_TICK = timedelta(microseconds=1)
# Items are stamped "first seen" when their poll starts and committed a little later: a period
# is sent only this long after it ends, so that what it holds has been written.
SETTLE = timedelta(minutes=2)


@dataclass(frozen=True)
class Period:
    start: datetime  # aware UTC, inclusive
    end: datetime  # aware UTC, exclusive
    resumed: bool = False  # a run that was claimed before and not finished


def zone(digest: Digest) -> ZoneInfo:
    return ZoneInfo(digest.timezone or "UTC")


def due(digest: Digest, now: datetime, last: DigestRun | None) -> Period | None:
    """The period to send at `now`, given the digest's newest run; None when nothing is due."""
    if last is not None and last.status is RunStatus.SENDING:
        return Period(last.period_start, last.period_end, resumed=True)
    end = last_fire_time(digest.schedule, zone(digest), now - SETTLE)
    if end is None:
        return None
    end = end.astimezone(UTC)
    if last is not None:
        return Period(last.period_end, end) if last.period_end < end else None
    start = last_fire_time(digest.schedule, zone(digest), end - _TICK)
    return Period((start or end - timedelta(days=1)).astimezone(UTC), end)


def current(digest: Digest, now: datetime, last: DigestRun | None) -> Period:
    """What a digest sent now would cover (for previews and `digest send`): from the end of the
    last period (or the schedule's last firing) until a moment ago (`SETTLE`)."""
    now = now - SETTLE
    if last is not None:
        start = last.period_end if last.status is RunStatus.DONE else last.period_start
    else:
        fired = last_fire_time(digest.schedule, zone(digest), now)
        start = fired.astimezone(UTC) if fired else now - timedelta(days=1)
        if start >= now:
            start = now - timedelta(days=1)
    return Period(start, now)


def next_run(digest: Digest, now: datetime) -> datetime | None:
    fire = next_fire_time(digest.schedule, zone(digest), now)
    return fire.astimezone(UTC) if fire else None


def run_key(digest: Digest, edition: str | None) -> str:
    """What a digest's runs are recorded under: its id, or `id:weekly` for its weekly edition
    (a period of its own, recipients of its own)."""
    if edition is None:
        return digest.id
    key = f"{digest.id}:{edition}"
    if len(key) <= 64:  # the column's width
        return key
    return f"{digest.id[:47]}~{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def editions(digest: Digest) -> tuple[str | None, ...]:
    """The digest itself (None) and, where it offers one, its weekly edition."""
    return (None, WEEKLY) if digest.weekly else (None,)


def edition_schedule(digest: Digest, edition: str | None) -> Digest:
    """The digest as an edition is timed: the weekly one on `weekly`."""
    if edition is None or digest.weekly is None:
        return digest
    return replace(digest, schedule=digest.weekly)
