"""Sources: their state between polls, and leases so that no source is fetched twice at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    update,
)

from aggregator.config import Defaults, Source
from aggregator.storage.dialect import serialise
from aggregator.storage.tables import UTCDateTime, time_writer
from aggregator.storage.tables import sources as t
from aggregator.types import FetchRecord, SourceState, SyncReport

# What a SourceState is made of, in the order of its fields (the interval in seconds): a claim
# reads these and no more (not when a row was made or changed, nor its priority, which took two
# more dates to parse a source), and `_state` makes a state of them by position.
_STATE_COLUMNS = (
    t.c.id,
    t.c.url,
    t.c.fetch_url,
    t.c.title,
    t.c.enabled,
    t.c.in_config,
    t.c.interval_seconds,
    t.c.next_due_at,
    t.c.etag,
    t.c.last_modified,
    t.c.last_fetched_at,
    t.c.last_success_at,
    t.c.last_status,
    t.c.last_error,
    t.c.consecutive_failures,
    t.c.gone_at,
    t.c.lease_owner,
    t.c.lease_expires_at,
    t.c.feed_title,
    t.c.last_warning,
    t.c.last_entry_count,
    t.c.discovered,
    t.c.last_article_error,
)
_INTERVAL = 6  # the place of interval_seconds among them


def _state(row: Sequence[Any]) -> SourceState:
    values = list(row)
    values[_INTERVAL] = timedelta(seconds=values[_INTERVAL])
    return SourceState(*values)


def sync(conn: Connection, configured: Sequence[Source], now: datetime) -> SyncReport:
    """Make the stored sources match the config; removed ones are kept (with their items)."""
    serialise(conn, "aggregator.sync_sources")
    # only what is compared: every column of 1,000 rows (dates parsed) cost each start 25 ms
    compared = (t.c.title, t.c.enabled, t.c.in_config, t.c.interval_seconds, t.c.priority)
    existing = {row.id: row for row in conn.execute(select(t.c.id, t.c.url, *compared))}
    added, changed = [], []
    fresh: list[dict[str, Any]] = []  # inserted together: a statement each cost a start of
    # 1,000 sources on a new database a quarter of a second (and 10,000, seconds)
    for source in configured:
        interval = int((source.interval or Defaults().interval).total_seconds())
        row = existing.get(source.id)
        if row is None:
            fresh.append(
                {
                    "id": source.id,
                    "url": source.url,
                    "fetch_url": source.url,
                    "title": source.title,
                    "enabled": source.enabled,
                    "in_config": True,
                    "interval_seconds": interval,
                    "next_due_at": now,
                    "consecutive_failures": 0,
                    "created_at": now,
                    "updated_at": now,
                    "priority": source.priority,
                }
            )
            added.append(source.id)
            continue
        values: dict[str, Any] = {}
        if row.url != source.url:  # a new URL starts afresh: no validators, no redirect, not gone
            values.update(
                url=source.url,
                fetch_url=source.url,
                discovered=False,
                etag=None,
                last_modified=None,
                gone_at=None,
                consecutive_failures=0,
                next_due_at=now,
                # a fetch of the old URL in flight loses its lease (to nobody, and already
                # lapsed, so anyone may claim the new URL now): its result is not stored
                lease_owner=VOIDED,
                lease_expires_at=now - timedelta(seconds=1),
            )
        for column, value in (
            ("title", source.title),
            ("enabled", source.enabled),
            ("in_config", True),
            ("interval_seconds", interval),
            ("priority", source.priority),
        ):
            if getattr(row, column) != value:
                values[column] = value
        if values:
            conn.execute(update(t).where(t.c.id == source.id).values(updated_at=now, **values))
            changed.append(source.id)
    if fresh:
        conn.execute(t.insert(), fresh)  # one executemany
    wanted = {s.id for s in configured}
    removed = [sid for sid, row in existing.items() if sid not in wanted and row.in_config]
    if removed:
        conn.execute(update(t).where(t.c.id.in_(removed)).values(in_config=False, updated_at=now))
    return SyncReport(tuple(added), tuple(changed), tuple(removed))


def get(conn: Connection, source_id: str) -> SourceState | None:
    row = conn.execute(select(*_STATE_COLUMNS).where(t.c.id == source_id)).first()
    return _state(row) if row else None


def all_states(conn: Connection) -> list[SourceState]:
    return [_state(row) for row in conn.execute(select(*_STATE_COLUMNS).order_by(t.c.id))]


def pollable(conn: Connection) -> list[tuple[str, datetime]]:
    """Each source that polls (enabled, in the config, not gone), with when it falls due: all a
    poll needs to know to plan (every state, read whole, cost a start 25 ms at 1,000 sources)."""
    query = (
        select(t.c.id, t.c.next_due_at)
        .where(t.c.enabled.is_(True), t.c.in_config.is_(True), t.c.gone_at.is_(None))
        .order_by(t.c.id)
    )
    return [(row.id, row.next_due_at) for row in conn.execute(query)]


def _claimable(now: Any) -> Any:
    return and_(
        t.c.enabled.is_(True),
        t.c.in_config.is_(True),
        t.c.gone_at.is_(None),
        t.c.next_due_at <= now,
        or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at < now),
    )


def _leasing(condition: Any) -> Any:
    """One guarded UPDATE ... RETURNING, built once: only rows still free are taken, on any
    backend. Built at every claim, the statement and its cache key were a third of a claim's
    time (about 1.8 ms a claim of 16 sources on SQLite)."""
    return (
        update(t)
        .where(t.c.id.in_(bindparam("ids", expanding=True)), condition)
        .values(lease_owner=bindparam("owner"), lease_expires_at=bindparam("until"))
        .returning(*_STATE_COLUMNS)
    )


_NOW = bindparam("now", type_=t.c.next_due_at.type)
_LEASE_DUE = _leasing(_claimable(_NOW))
_LEASE_NAMED = _leasing(
    and_(
        t.c.in_config.is_(True),
        or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at < _NOW),
    )
)


_DUE = (
    select(t.c.id)
    .where(_claimable(_NOW))
    .order_by(t.c.next_due_at, t.c.id)
    .limit(bindparam("limit", type_=Integer))
)
_DUE_LOCKED = _DUE.with_for_update(skip_locked=True)


def _lease(
    conn: Connection, statement: Any, ids: Sequence[str], now: datetime, owner: str, until: datetime
) -> list[SourceState]:
    if not ids:
        return []
    rows = conn.execute(statement, {"ids": list(ids), "now": now, "owner": owner, "until": until})
    states = {row.id: _state(row) for row in rows}
    return [states[source_id] for source_id in ids if source_id in states]


def claim_due(
    conn: Connection, now: datetime, owner: str, lease: timedelta, limit: int
) -> list[SourceState]:
    """Lease up to `limit` due sources to `owner`, most overdue first.

    On PostgreSQL the candidates are locked with SKIP LOCKED, so concurrent workers pick
    different rows instead of queueing; the guarded UPDATE makes the claim safe on any backend.
    """
    query = _DUE_LOCKED if conn.dialect.name == "postgresql" else _DUE
    ids = list(conn.execute(query, {"now": now, "limit": limit}).scalars())
    return _lease(conn, _LEASE_DUE, ids, now, owner, now + lease)


def claim_named(
    conn: Connection, ids: Sequence[str], now: datetime, owner: str, lease: timedelta
) -> list[SourceState]:
    """Lease the named sources whether due or not (an editor asked to poll them now), unless
    another worker holds them; sources no longer in the config are left alone."""
    return _lease(conn, _LEASE_NAMED, ids, now, owner, now + lease)


def next_due(conn: Connection) -> datetime | None:
    """When the earliest pollable source falls due."""
    return conn.execute(
        select(func.min(t.c.next_due_at)).where(
            t.c.enabled.is_(True), t.c.in_config.is_(True), t.c.gone_at.is_(None)
        )
    ).scalar_one_or_none()


def oldest_waiting(conn: Connection, now: datetime) -> datetime | None:
    """The due time of the most overdue source nobody has claimed: what queue lag measures."""
    return conn.execute(select(func.min(t.c.next_due_at)).where(_claimable(now))).scalar()


def release(conn: Connection, source_id: str, owner: str) -> None:
    """Give a lease back unused (on shutdown), so another worker may take the source at once."""
    conn.execute(
        update(t)
        .where(t.c.id == source_id, t.c.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )


VOIDED = "-"  # the lease owner of a source whose URL changed under a fetch


def _keep_unless(flag: str, value: Any, column: Any) -> Any:
    return case((bindparam(flag, type_=Boolean) == true(), value), else_=column)


# One statement for every outcome, built once: the flags in the parameters decide which columns
# change, so SQLAlchemy compiles it once instead of once per combination and per call. What never
# varies is written into it (NULL, 0, 1): SQLAlchemy makes every value a parameter, and goes
# through each parameter of a statement again for each row of an executemany.
_HELD = or_(
    bindparam("owner", type_=String) == None,  # noqa: E711 (SQL NULL test)
    t.c.lease_owner == bindparam("owner", type_=String),
    t.c.lease_owner.is_(None),
)
_RECORD = (
    update(t)
    .where(t.c.id == bindparam("source_id"), _HELD)
    .values(
        last_fetched_at=bindparam("fetched_at", type_=t.c.last_fetched_at.type),
        last_status=bindparam("status", type_=Integer),
        next_due_at=bindparam("next_due_at", type_=t.c.next_due_at.type),
        lease_owner=null(),
        lease_expires_at=null(),
        updated_at=bindparam("fetched_at", type_=t.c.updated_at.type),
        last_success_at=_keep_unless("ok", bindparam("fetched_at"), t.c.last_success_at),
        last_error=bindparam("error", type_=Text),
        consecutive_failures=_keep_unless(
            "ok", literal_column("0"), t.c.consecutive_failures + literal_column("1")
        ),
        last_warning=_keep_unless("document", bindparam("warning", type_=Text), t.c.last_warning),
        last_entry_count=_keep_unless(
            "document", bindparam("entry_count", type_=Integer), t.c.last_entry_count
        ),
        feed_title=func.coalesce(bindparam("feed_title", type_=Text), t.c.feed_title),
        etag=func.coalesce(bindparam("etag", type_=Text), t.c.etag),
        last_modified=func.coalesce(bindparam("last_modified", type_=Text), t.c.last_modified),
        fetch_url=func.coalesce(
            bindparam("discovered_url", type_=Text),
            bindparam("permanent_url", type_=Text),
            t.c.fetch_url,
        ),
        discovered=case(
            (bindparam("discovered_url", type_=Text).is_not(None), true()), else_=t.c.discovered
        ),
        gone_at=_keep_unless("gone", bindparam("fetched_at"), t.c.gone_at),
    )
)
# `_RECORD` of a 304 that names no new address, title or end (nearly every outcome of a poll):
# the same columns change the same way, in a third of the parameters (`record_fetches`).
_NOT_MODIFIED = (
    update(t)
    .where(t.c.id == bindparam("source_id"), _HELD)
    .values(
        last_fetched_at=bindparam("fetched_at", type_=t.c.last_fetched_at.type),
        last_status=literal_column("304"),
        next_due_at=bindparam("next_due_at", type_=t.c.next_due_at.type),
        lease_owner=null(),
        lease_expires_at=null(),
        updated_at=bindparam("fetched_at", type_=t.c.updated_at.type),
        last_success_at=bindparam("fetched_at", type_=t.c.last_success_at.type),
        last_error=null(),
        consecutive_failures=literal_column("0"),
        etag=func.coalesce(bindparam("etag", type_=Text), t.c.etag),
        last_modified=func.coalesce(bindparam("last_modified", type_=Text), t.c.last_modified),
    )
)
_LEASES = select(t.c.id, t.c.lease_owner).where(t.c.id.in_(bindparam("ids", expanding=True)))
# FOR NO KEY UPDATE, as the UPDATE itself locks: FOR UPDATE would also block the foreign-key
# checks of rows that name a source (retention's pruned_keys, under the story lock), and a group
# of saves takes the story lock after this: a cycle. Rows locked in id order, as other writers do.
_LEASES_LOCKED = _LEASES.order_by(t.c.id).with_for_update(key_share=True)


def record_fetch(conn: Connection, record: FetchRecord, owner: str | None = None) -> bool:
    """Store a poll's outcome and release the lease; False if `owner` no longer holds it.

    A 304 keeps what the last document said (validators, warning, entry count); a failure keeps
    the validators and the last success.
    """
    return conn.execute(_RECORD, _record_params(record, owner)).rowcount == 1


def record_fetches(
    conn: Connection, outcomes: Sequence[tuple[FetchRecord, str | None]]
) -> list[bool]:
    """`record_fetch` for many outcomes, in one statement run over all of them (executemany):
    a statement each cost an all-304 poll of 1,000 sources about 0.15 s of SQLAlchemy's
    per-statement work, on the thread the fetching loop shares the GIL with. Which leases are
    still held is read first, with the rows locked (on SQLite the transaction holds the write
    lock already), so each outcome still learns whether it was written: as if written one after
    the other, but for a source given twice in one batch (a poller never does), which is
    written once, for the first. Rows are locked in id order, as other writers lock them: in
    the order given, concurrent workers deadlocked about once in 2,000 groups."""
    if not outcomes:
        return []
    ids = sorted({record.source_id for record, _ in outcomes})
    query = _LEASES_LOCKED if conn.dialect.name == "postgresql" else _LEASES
    owners = dict(conn.execute(query, {"ids": ids}).all())
    held, seen = [], set()
    for record, owner in outcomes:
        sid = record.source_id
        held.append(
            sid in owners and sid not in seen and (owner is None or owners[sid] in (owner, None))
        )
        seen.add(sid)
    written: list[dict[str, Any]] = []
    not_modified: list[dict[str, Any]] = []
    for (record, owner), kept in zip(outcomes, held, strict=True):
        if kept and _plain_304(record):
            not_modified.append(
                {
                    "source_id": record.source_id,
                    "owner": owner,
                    "fetched_at": record.fetched_at,
                    "next_due_at": record.next_due_at,
                    "etag": record.etag,
                    "last_modified": record.last_modified,
                }
            )
        elif kept:
            written.append(_record_params(record, owner))
    for statement, rows in ((_NOT_MODIFIED, not_modified), (_RECORD, written)):
        if rows:
            _run_many(conn, statement, rows)
    return held


class _Driven:
    """A statement compiled for one dialect, for its driver to run over many rows itself."""

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        self.positional: bool = compiled.positional
        # the parameters as the driver takes them: in order (qmark), or by name (pyformat)
        self.names: list[str] = list(
            compiled.positiontup or dict.fromkeys(compiled.bind_names.values())
        )
        # times as storage writes them at the driver elsewhere (`time_writer`); any other type
        # by its own bind processor
        when = time_writer(dialect)
        self.convert: dict[str, Callable[[Any], Any]] = {}
        for bind, name in compiled.bind_names.items():
            kind = bind.type
            if isinstance(kind, UTCDateTime):
                self.convert[name] = when
            elif (convert := kind.dialect_impl(dialect).bind_processor(dialect)) is not None:
                self.convert[name] = convert


_driven: dict[tuple[int, str], _Driven] = {}


def _run_many(conn: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
    """`conn.execute(statement, rows)`, its parameters made ready for the driver here (times by
    `time_writer`, any other value by its type's own bind processor) and the compiled statement
    run by the driver's executemany: SQLAlchemy goes through every parameter of a statement
    again for each row (matching them to its cache key, then converting), three quarters of what
    storing an all-304 poll cost in Python. Tests hold the rows written to `conn.execute`'s."""
    dialect = conn.dialect
    key = (id(statement), dialect.name)
    driven = _driven.get(key)
    if driven is None:
        driven = _driven[key] = _Driven(statement, dialect)
    convert, names = driven.convert, driven.names
    if driven.positional:
        ready: list[Any] = [
            tuple(convert[n](row[n]) if n in convert else row[n] for n in names) for row in rows
        ]
    else:
        ready = [{n: convert[n](row[n]) if n in convert else row[n] for n in names} for row in rows]
    conn.exec_driver_sql(driven.sql, ready)


def _plain_304(record: FetchRecord) -> bool:
    """Whether `_NOT_MODIFIED` writes this outcome as `_RECORD` would."""
    return (
        record.status == 304
        and record.ok
        and not record.gone
        and not record.permanent_url
        and not record.discovered_url
        and not record.feed_title
    )


def _record_params(record: FetchRecord, owner: str | None) -> dict[str, Any]:
    return {
        "source_id": record.source_id,
        "owner": owner,
        "fetched_at": record.fetched_at,
        "status": record.status,
        "next_due_at": record.next_due_at,
        "ok": record.ok,
        "error": None if record.ok else record.error,
        "document": record.ok and record.status != 304,
        "warning": record.warning,
        "entry_count": record.entry_count,
        "feed_title": record.feed_title or None,
        "etag": record.etag,
        "last_modified": record.last_modified,
        "permanent_url": record.permanent_url or None,
        "discovered_url": record.discovered_url or None,
        "gone": record.gone,
    }


def note_articles(conn: Connection, source_id: str, problem: str | None) -> None:
    """What went wrong with a source's article pages at its last poll that fetched some."""
    conn.execute(update(t).where(t.c.id == source_id).values(last_article_error=problem))
