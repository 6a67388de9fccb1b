"""When sources are polled next: intervals, adaptive rhythm, server asks, backoff, jitter."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.feed import policy
from aggregator.feed.policy import Rhythm

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def spread(delays: list[datetime], around: timedelta) -> tuple[float, float]:
    ratios = [(d - NOW) / around for d in delays]
    return min(ratios), max(ratios)


def test_success_waits_the_interval_with_jitter() -> None:
    rng = random.Random(1)
    times = [policy.after_success(NOW, Rhythm(15 * MIN), rng) for _ in range(200)]
    low, high = spread(times, 15 * MIN)
    assert 0.9 <= low < 0.95 and 1.05 < high <= 1.1  # spread out, never beyond 10%


def test_adaptive_follows_the_publishing_rhythm_within_bounds() -> None:
    hourly = [NOW - timedelta(hours=h) for h in range(10)]
    rhythm = Rhythm(15 * MIN, adaptive=True, min_interval=5 * MIN, max_interval=6 * 60 * MIN)
    due = policy.after_success(NOW, rhythm, random.Random(2), published=hourly)
    assert timedelta(minutes=54) <= due - NOW <= timedelta(minutes=66)

    every_minute = [NOW - m * MIN for m in range(10)]
    due = policy.after_success(NOW, rhythm, random.Random(2), published=every_minute)
    assert 4.5 * MIN <= due - NOW <= 5.5 * MIN  # not below min_interval

    weekly = [NOW - timedelta(days=7 * w) for w in range(5)]
    due = policy.after_success(NOW, rhythm, random.Random(2), published=weekly)
    assert due - NOW <= 6.6 * 60 * MIN  # not above max_interval

    due = policy.after_success(NOW, rhythm, random.Random(2), published=[NOW])
    assert 13.5 * MIN <= due - NOW <= 16.5 * MIN  # too little history: the interval


def test_ttl_max_age_and_expires_are_floors() -> None:
    rhythm = Rhythm(10 * MIN)
    rng = random.Random(3)
    assert policy.after_success(NOW, rhythm, rng, ttl=60 * MIN) - NOW >= 60 * MIN
    headers = {"cache-control": "public, max-age=3600", "age": "600"}
    assert policy.after_success(NOW, rhythm, rng, headers=headers) - NOW >= 50 * MIN
    headers = {"expires": "Tue, 24 Nov 2026 14:00:00 GMT"}
    assert policy.after_success(NOW, rhythm, rng, headers=headers) - NOW >= 120 * MIN
    headers = {"cache-control": "no-cache, max-age=3600"}
    assert policy.after_success(NOW, rhythm, rng, headers=headers) - NOW <= 11 * MIN
    huge = {"cache-control": "max-age=99999999"}
    assert policy.after_success(NOW, rhythm, rng, headers=huge) - NOW <= 24 * 66 * MIN  # bounded


@pytest.mark.parametrize(("failures", "intervals"), [(1, 1), (2, 2), (3, 4), (6, 32)])
def test_backoff_doubles(failures: int, intervals: int) -> None:
    due = policy.after_failure(NOW, Rhythm(10 * MIN), random.Random(4), failures)
    assert 0.9 * intervals <= (due - NOW) / (10 * MIN) <= 1.1 * intervals


@pytest.mark.parametrize(("failures", "minutes"), [(1, 2), (2, 4), (3, 8), (6, 64)])
def test_a_transient_failure_is_retried_in_minutes_then_backs_off(
    failures: int, minutes: int
) -> None:
    rhythm = Rhythm(60 * MIN, first_retry=2 * MIN)
    due = policy.after_failure(NOW, rhythm, random.Random(4), failures, transient=True)
    assert 0.9 * minutes <= (due - NOW) / MIN <= 1.1 * minutes
    # a source polled more often than first_retry retries at its own interval
    often = policy.after_failure(NOW, Rhythm(MIN), random.Random(4), 1, transient=True)
    assert 0.9 <= (often - NOW) / MIN <= 1.1


def test_backoff_is_capped() -> None:
    rhythm = Rhythm(10 * MIN, max_backoff=timedelta(hours=24))
    due = policy.after_failure(NOW, rhythm, random.Random(5), failures=40)
    assert due - NOW <= timedelta(hours=24) * 1.1


@pytest.mark.parametrize(
    ("value", "wait"),
    [("120", timedelta(minutes=2)), ("Tue, 24 Nov 2026 15:00:00 GMT", timedelta(hours=3))],
)
def test_retry_after_in_seconds_or_as_a_date(value: str, wait: timedelta) -> None:
    assert policy.retry_after(value, NOW) == wait
    rhythm = Rhythm(MIN)
    due = policy.after_failure(NOW, rhythm, random.Random(6), 1, {"retry-after": value})
    assert due - NOW >= wait  # never earlier than asked, jitter or not


def test_an_absurd_retry_after_is_bounded() -> None:
    rhythm = Rhythm(MIN, max_backoff=timedelta(hours=24))
    due = policy.after_failure(NOW, rhythm, random.Random(7), 1, {"retry-after": "99999999"})
    assert due - NOW <= timedelta(hours=24) * 1.1


def test_unreadable_headers_are_ignored() -> None:
    assert policy.retry_after("soon", NOW) is None
    assert policy.freshness({"expires": "0"}, NOW) is None
