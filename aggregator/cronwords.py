"""Cron schedules in words, for people: `0 7 * * 1-5` in Europe/Paris reads "at 07:00, Monday
through Friday, Paris time" on the status page and in `digest list`.

cron-descriptor (the only module that imports it) knows every crontab form and words them in a
24-hour clock; a daily schedule gets "every day" added, since "at 07:00" alone leaves the reader
wondering how often.
"""

from __future__ import annotations

import re
from functools import cache

from cron_descriptor import ExpressionDescriptor, Options


def place(timezone: str) -> str:
    """`Europe/Paris` -> `Paris time`, `America/New_York` -> `New York time`, `UTC` -> `UTC`."""
    if "/" not in timezone:
        return timezone
    return timezone.rsplit("/", 1)[1].replace("_", " ") + " time"


@cache
def describe(schedule: str, timezone: str = "UTC") -> str:
    """The schedule in words, with its time zone; the expression itself if it cannot be read."""
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        words = ExpressionDescriptor(schedule, options).get_description()
    except Exception:
        # already refused what cron cannot read, so this is only a fallback for the display)
        return f"cron {schedule} ({timezone})"
    fields = schedule.split()
    if len(fields) == 5 and fields[2:] == ["*", "*", "*"] and words.startswith("At "):
        words = "every day at " + words[3:]
    words = words[:1].lower() + words[1:]
    # the day first, as people say it: "every Monday at 08:00", "Monday through Friday at 06:30"
    words = re.sub(r"^at ([^,]+), only on (\w+)$", r"every \2 at \1", words)
    words = re.sub(r"^at ([^,]+), (\w+ through \w+)$", r"\2 at \1", words)
    return f"{words}, {place(timezone)}"
