"""Everything that touches APScheduler 3.x: cron schedules and the ticks of the running service.

APScheduler's job store must never be shared between processes, so the jobs here are only ticks;
the work itself is claimed from the database. Cron expressions are read the way crontab(5) reads
them: APScheduler 3 numbers weekdays from Monday = 0, so numeric weekdays are translated first
(`0 7 * * 0` is Sunday, as every editor expects).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday_field(field: str) -> str:
    """Translate crontab weekday numbers (0 or 7 = Sunday) into APScheduler's day names."""
    if field == "*" or not any(ch.isdigit() for ch in field):
        return field
    days: set[int] = set()
    for token in field.split(","):
        base, _, step_text = token.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = 0, 6
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = int(first), int(last)
        else:
            start = int(base)
            end = 6 if step_text else start
        if not (0 <= start <= 7 and 0 <= end <= 7 and start <= end and step > 0):
            raise ValueError(f"weekday {token!r} is out of range (0-7, Sunday is 0 or 7)")
        days.update(day % 7 for day in range(start, end + 1, step))
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


def cron_trigger(expression: str, timezone: tzinfo | str) -> CronTrigger:
    """A trigger for a five-field crontab expression; raises ValueError when it is not one."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"it has {len(parts)} fields, not 5")
    minute, hour, day, month, weekday = parts
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_weekday_field(weekday),
        timezone=timezone,
    )


def cron_problem(expression: str) -> str | None:
    """What is wrong with a crontab expression, or None when it is valid."""
    try:
        cron_trigger(expression, "UTC")
    except ValueError as exc:
        return str(exc)
    return None


def next_fire_time(expression: str, timezone: tzinfo | str, after: datetime) -> datetime | None:
    """When a crontab schedule next fires after `after` (aware)."""
    fire: datetime | None = cron_trigger(expression, timezone).get_next_fire_time(None, after)
    return fire


def last_fire_time(expression: str, timezone: tzinfo | str, until: datetime) -> datetime | None:
    """When a crontab schedule last fired at or before `until` (aware); None if not within a
    year and a day. Looks back in growing windows, so a minutely schedule costs one step."""
    trigger = cron_trigger(expression, timezone)
    window = timedelta(minutes=1)
    while window <= timedelta(days=367):
        fire: datetime | None = trigger.get_next_fire_time(None, until - window)
        found = None
        while fire is not None and fire <= until:
            found = fire
            # step from one second after, compared in UTC: at an autumn clock change a wall
            # time happens twice and APScheduler would hand the second one back for ever
            after = (fire + timedelta(seconds=1)).astimezone(UTC)
            following = trigger.get_next_fire_time(fire, after)
            if following is not None and following.astimezone(UTC) <= fire.astimezone(UTC):
                following = trigger.get_next_fire_time(fire, after + timedelta(hours=1))
            fire = following
        if found is not None:
            return found
        window *= 2
    return None


class Ticker:
    """A background scheduler that calls functions at fixed intervals, one run of each at a time."""

    def __init__(self) -> None:
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._stopped = threading.Event()

    def every(self, interval: timedelta, name: str, func: Callable[[], object]) -> None:
        """Run `func` every `interval`, starting now; a slow run is never overlapped by the next."""
        self._scheduler.add_job(
            func,
            IntervalTrigger(seconds=interval.total_seconds(), timezone="UTC"),
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now().astimezone(),
        )

    def start(self) -> None:
        self._scheduler.start()
        log.info("scheduler started")

    def shutdown(self, wait: bool = True) -> None:
        """Stop ticking; with `wait`, let the running ticks finish first."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
        self._stopped.set()
        log.info("scheduler stopped")

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)
