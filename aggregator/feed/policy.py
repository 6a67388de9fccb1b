"""When to poll a source next: pure functions of what the last fetch said.

- success: the configured interval, or with `adaptive` the feed's real publishing rhythm within
  [min_interval, max_interval]; never earlier than the feed's `<ttl>`, `Cache-Control: max-age` or
  `Expires` ask (bounded by max_backoff, so a typo in a header cannot silence a source for a year);
- failure: exponential backoff from the interval, doubling per consecutive failure, capped;
- 429/503 with `Retry-After`: at least what the server asks, bounded the same way;
- every delay gets +-10% jitter so sources configured alike spread out instead of polling in step.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import pairwise
from statistics import median

JITTER = 0.1
LONGEST_ASK = timedelta(days=365)  # what a header may ask for at most, before max_backoff applies
_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Rhythm:
    """The knobs that shape a source's schedule."""

    interval: timedelta
    adaptive: bool = False
    min_interval: timedelta = timedelta(minutes=5)
    max_interval: timedelta = timedelta(hours=6)
    max_backoff: timedelta = timedelta(hours=24)
    first_retry: timedelta = timedelta(minutes=2)


def http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """`Retry-After` as seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():  # 99999999999999999999 would overflow timedelta: clamp first
        return _seconds(text)
    moment = http_date(text)
    return max(moment - now, timedelta(0)) if moment else None


def freshness(headers: Mapping[str, str], now: datetime) -> timedelta | None:
    """How long the server says the response stays fresh (Cache-Control beats Expires)."""
    control = headers.get("cache-control", "")
    if "no-cache" in control.lower() or "no-store" in control.lower():
        return None
    match = _MAX_AGE.search(control)
    if match:
        age_text = (headers.get("age") or "").strip()
        age = _seconds(age_text) if age_text.isdigit() else timedelta(0)
        return max(_seconds(match.group(1)) - age, timedelta(0))
    expires = http_date(headers.get("expires"))
    return max(expires - now, timedelta(0)) if expires else None


def _seconds(digits: str) -> timedelta:
    """A header's count of seconds, clamped to LONGEST_ASK (however many digits it has)."""
    limit = int(LONGEST_ASK.total_seconds())
    return timedelta(seconds=limit if len(digits) > 12 else min(int(digits), limit))


def publishing_gap(moments: Sequence[datetime]) -> timedelta | None:
    """The median time between consecutive publications (needs at least three)."""
    ordered = sorted(moments)
    gaps = [later - earlier for earlier, later in pairwise(ordered) if later > earlier]
    if len(gaps) < 2:
        return None
    return timedelta(seconds=median(g.total_seconds() for g in gaps))


def _jitter(delay: timedelta, rng: random.Random, minimum: timedelta = timedelta(0)) -> timedelta:
    """Spread by +-JITTER, but never below what a server asked for."""
    return max(delay * (1 + rng.uniform(-JITTER, JITTER)), minimum)


def after_success(
    now: datetime,
    rhythm: Rhythm,
    rng: random.Random,
    *,
    published: Sequence[datetime] = (),
    ttl: timedelta | None = None,
    headers: Mapping[str, str] | None = None,
) -> datetime:
    delay = rhythm.interval
    if rhythm.adaptive:
        gap = publishing_gap(published)
        delay = min(max(gap or rhythm.interval, rhythm.min_interval), rhythm.max_interval)
    asks = [ttl, freshness(headers or {}, now)]
    floor = min(max((a for a in asks if a is not None), default=timedelta(0)), rhythm.max_backoff)
    return now + _jitter(max(delay, floor), rng, floor)


def after_failure(
    now: datetime,
    rhythm: Rhythm,
    rng: random.Random,
    failures: int,
    headers: Mapping[str, str] | None = None,
    *,
    transient: bool = False,
) -> datetime:
    """`failures` counts this one: 1 waits about one interval, then 2, 4, 8... intervals. A
    `transient` failure (the network, a timeout, a 5xx: what often passes in a minute) starts
    from `first_retry` instead, when that is shorter: 2, 4, 8... minutes, so a blip (or a
    newcomer's machine coming back online) costs minutes, not an hour; a 404 or a document
    that is no feed waits the interval, as retrying soon would not change it."""
    step = min(rhythm.first_retry, rhythm.interval) if transient else rhythm.interval
    delay = min(step * (2 ** min(max(failures - 1, 0), 30)), rhythm.max_backoff)
    asked = retry_after((headers or {}).get("retry-after"), now)
    floor = min(asked, rhythm.max_backoff) if asked is not None else timedelta(0)
    return now + _jitter(max(delay, floor), rng, floor)
