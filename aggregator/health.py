"""A source's health in words, for editors: the CLI today, the status page later."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aggregator.storage import SourceCounts
from aggregator.types import SourceState


class Health(StrEnum):
    UNHEALTHY = "unhealthy"  # failing for `unhealthy_after` polls or more
    FAILING = "failing"
    GONE = "gone"  # 410: polling stopped
    MOVED = "moved"  # works, but feeds.yaml should get the new URL
    WARNING = "warning"  # works, but the feed is malformed, or longer than polling.max_entries
    OK = "ok"
    NEW = "new"  # not polled yet
    PAUSED = "paused"
    REMOVED = "removed"  # no longer in feeds.yaml; items kept


_ORDER = list(Health)


@dataclass(frozen=True)
class SourceHealth:
    state: SourceState
    health: Health
    counts: SourceCounts

    @property
    def per_day(self) -> float:
        """New items per day, over the last week."""
        return self.counts.last_week / 7

    def as_json(self) -> dict[str, Any]:
        s = self.state
        return {
            "id": s.id,
            "status": self.health.value,
            "url": s.url,
            "url_in_use": s.fetch_url,
            "moved": s.moved and not s.discovered,
            "discovered": s.discovered,
            "last_attempt": iso(s.last_fetched_at),
            "last_success": iso(s.last_success_at),
            "last_http_status": s.last_status,
            "last_error": s.last_error,
            "last_warning": s.last_warning,
            "last_article_error": s.last_article_error,
            "consecutive_failures": s.consecutive_failures,
            "entries_in_feed": s.last_entry_count,
            "stored_items": self.counts.stored,
            "new_items_last_day": self.counts.last_day,
            "new_items_per_day": round(self.per_day, 2),
            "next_poll": iso(s.next_due_at) if self.health not in _IDLE else None,
        }


_IDLE = (Health.GONE, Health.PAUSED, Health.REMOVED)


def iso(moment: datetime | None) -> str | None:
    """A time for the `--json` of the listings: ISO 8601 in UTC, or null."""
    return moment.astimezone(UTC).isoformat() if moment else None


def assess(state: SourceState, unhealthy_after: int) -> Health:
    if not state.in_config:
        return Health.REMOVED
    if not state.enabled:
        return Health.PAUSED
    if state.gone_at:
        return Health.GONE
    if state.consecutive_failures >= unhealthy_after:
        return Health.UNHEALTHY
    if state.consecutive_failures:
        return Health.FAILING
    if state.last_success_at is None:
        return Health.NEW
    if state.moved:
        return Health.MOVED
    return Health.WARNING if state.last_warning or state.last_article_error else Health.OK


def report(
    states: list[SourceState], counts: dict[str, SourceCounts], unhealthy_after: int
) -> list[SourceHealth]:
    """Every source's health, the ones that need an editor first."""
    empty = SourceCounts(0, 0, 0)
    rows = [SourceHealth(s, assess(s, unhealthy_after), counts.get(s.id, empty)) for s in states]
    return sorted(
        rows, key=lambda r: (_ORDER.index(r.health), -r.state.consecutive_failures, r.state.id)
    )
