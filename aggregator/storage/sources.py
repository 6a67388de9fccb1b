"""Sources: their state between polls, and leases so that no source is fetched twice at once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, func, or_, select, update

from aggregator.config import Defaults, Source
from aggregator.storage.dialect import serialise
from aggregator.storage.tables import sources as t
from aggregator.types import FetchRecord, SourceState, SyncReport


def _state(row: Row[Any]) -> SourceState:
    m = row._mapping
    return SourceState(
        id=m["id"],
        url=m["url"],
        fetch_url=m["fetch_url"],
        title=m["title"],
        enabled=m["enabled"],
        in_config=m["in_config"],
        interval=timedelta(seconds=m["interval_seconds"]),
        next_due_at=m["next_due_at"],
        etag=m["etag"],
        last_modified=m["last_modified"],
        last_fetched_at=m["last_fetched_at"],
        last_success_at=m["last_success_at"],
        last_status=m["last_status"],
        last_error=m["last_error"],
        consecutive_failures=m["consecutive_failures"],
        gone_at=m["gone_at"],
        lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"],
        feed_title=m["feed_title"],
        last_warning=m["last_warning"],
        last_entry_count=m["last_entry_count"],
    )


def sync(conn: Connection, configured: Sequence[Source], now: datetime) -> SyncReport:
    """Make the stored sources match the config; removed ones are kept (with their items)."""
    serialise(conn, "aggregator.sync_sources")
    existing = {row.id: row for row in conn.execute(select(t))}
    added, changed = [], []
    for source in configured:
        interval = int((source.interval or Defaults().interval).total_seconds())
        row = existing.get(source.id)
        if row is None:
            conn.execute(
                t.insert().values(
                    id=source.id,
                    url=source.url,
                    fetch_url=source.url,
                    title=source.title,
                    enabled=source.enabled,
                    in_config=True,
                    interval_seconds=interval,
                    next_due_at=now,
                    consecutive_failures=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            added.append(source.id)
            continue
        values: dict[str, Any] = {}
        if row.url != source.url:  # a new URL starts afresh: no validators, no redirect, not gone
            values.update(
                url=source.url,
                fetch_url=source.url,
                etag=None,
                last_modified=None,
                gone_at=None,
                consecutive_failures=0,
                next_due_at=now,
            )
        for column, value in (
            ("title", source.title),
            ("enabled", source.enabled),
            ("in_config", True),
            ("interval_seconds", interval),
        ):
            if getattr(row, column) != value:
                values[column] = value
        if values:
            conn.execute(update(t).where(t.c.id == source.id).values(updated_at=now, **values))
            changed.append(source.id)
    wanted = {s.id for s in configured}
    removed = [sid for sid, row in existing.items() if sid not in wanted and row.in_config]
    if removed:
        conn.execute(update(t).where(t.c.id.in_(removed)).values(in_config=False, updated_at=now))
    return SyncReport(tuple(added), tuple(changed), tuple(removed))


def get(conn: Connection, source_id: str) -> SourceState | None:
    row = conn.execute(select(t).where(t.c.id == source_id)).first()
    return _state(row) if row else None


def all_states(conn: Connection) -> list[SourceState]:
    return [_state(row) for row in conn.execute(select(t).order_by(t.c.id))]


def _claimable(now: datetime) -> Any:
    return and_(
        t.c.enabled.is_(True),
        t.c.in_config.is_(True),
        t.c.gone_at.is_(None),
        t.c.next_due_at <= now,
        or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at < now),
    )


def _lease(
    conn: Connection, ids: Sequence[str], condition: Any, owner: str, until: datetime
) -> list[SourceState]:
    """One guarded UPDATE ... RETURNING: only rows still free are taken, on any backend."""
    if not ids:
        return []
    rows = conn.execute(
        update(t).where(t.c.id.in_(ids), condition)
        .values(lease_owner=owner, lease_expires_at=until)
        .returning(*t.c)
    )
    states = {row.id: _state(row) for row in rows}
    return [states[source_id] for source_id in ids if source_id in states]


def claim_due(
    conn: Connection, now: datetime, owner: str, lease: timedelta, limit: int
) -> list[SourceState]:
    """Lease up to `limit` due sources to `owner`, most overdue first.

    On PostgreSQL the candidates are locked with SKIP LOCKED, so concurrent workers pick
    different rows instead of queueing; the guarded UPDATE makes the claim safe on any backend.
    """
    query = select(t.c.id).where(_claimable(now)).order_by(t.c.next_due_at, t.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(conn.execute(query).scalars())
    return _lease(conn, ids, _claimable(now), owner, now + lease)


def claim_named(
    conn: Connection, ids: Sequence[str], now: datetime, owner: str, lease: timedelta
) -> list[SourceState]:
    """Lease the named sources whether due or not (an editor asked to poll them now), unless
    another worker holds them; sources no longer in the config are left alone."""
    free = and_(t.c.in_config.is_(True),
                or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at < now))
    return _lease(conn, list(ids), free, owner, now + lease)


def next_due(conn: Connection) -> datetime | None:
    """When the earliest pollable source falls due."""
    return conn.execute(
        select(func.min(t.c.next_due_at)).where(
            t.c.enabled.is_(True), t.c.in_config.is_(True), t.c.gone_at.is_(None)
        )
    ).scalar_one_or_none()


def release(conn: Connection, source_id: str, owner: str) -> None:
    """Give a lease back unused (on shutdown), so another worker may take the source at once."""
    conn.execute(
        update(t)
        .where(t.c.id == source_id, t.c.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )


def record_fetch(conn: Connection, record: FetchRecord, owner: str | None = None) -> bool:
    """Store a poll's outcome and release the lease; False if `owner` no longer holds it."""
    values: dict[str, Any] = {
        "last_fetched_at": record.fetched_at,
        "last_status": record.status,
        "next_due_at": record.next_due_at,
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": record.fetched_at,
    }
    if record.ok:
        values.update(last_success_at=record.fetched_at, last_error=None, consecutive_failures=0)
        if record.status != 304:  # a 304 says nothing new about the document
            values.update(last_warning=record.warning, last_entry_count=record.entry_count)
        if record.feed_title:
            values["feed_title"] = record.feed_title
    else:
        values.update(last_error=record.error, consecutive_failures=t.c.consecutive_failures + 1)
    if record.etag is not None:
        values["etag"] = record.etag
    if record.last_modified is not None:
        values["last_modified"] = record.last_modified
    if record.permanent_url:
        values["fetch_url"] = record.permanent_url
    if record.gone:
        values["gone_at"] = record.fetched_at
    query = update(t).where(t.c.id == record.source_id)
    if owner is not None:
        query = query.where(or_(t.c.lease_owner == owner, t.c.lease_owner.is_(None)))
    return conn.execute(query.values(**values)).rowcount == 1
