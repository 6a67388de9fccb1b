"""Digest schedules in words, as the status page and `digest list` show them."""

from __future__ import annotations

import pytest

from aggregator.cronwords import describe, place


@pytest.mark.parametrize(
    ("schedule", "zone", "words"),
    [
        ("0 7 * * *", "Europe/Paris", "every day at 07:00, Paris time"),
        ("30 6 * * 1-5", "America/New_York", "Monday through Friday at 06:30, New York time"),
        ("0 8 * * 1", "UTC", "every Monday at 08:00, UTC"),
        ("0 18 * * 0", "UTC", "every Sunday at 18:00, UTC"),  # crontab's Sunday is 0
        ("0 7,19 * * *", "UTC", "every day at 07:00 and 19:00, UTC"),
        ("*/15 * * * *", "UTC", "every 15 minutes, UTC"),
        ("0 7 1 * *", "UTC", "at 07:00, on day 1 of the month, UTC"),
    ],
)
def test_a_schedule_reads_as_people_say_it(schedule: str, zone: str, words: str) -> None:
    assert describe(schedule, zone) == words


def test_what_cannot_be_worded_is_shown_as_written() -> None:
    assert describe("not cron", "Europe/Paris") == "cron not cron (Europe/Paris)"
    assert place("Asia/Ho_Chi_Minh") == "Ho Chi Minh time" and place("UTC") == "UTC"
