"""Digest runs and deliveries: a period is claimed by one worker, each delivery recorded at once.

A run is unique per (digest, period start). A worker claims it with a lease; a second worker finds
it taken and skips; a crashed worker's lease expires and the next claim resumes the same run, where
`delivered()` tells which recipients already have their copy.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, or_, select, update

from aggregator.storage.dialect import insert as _insert
from aggregator.storage.tables import UTCDateTime, deliveries, digest_runs
from aggregator.types import Delivery, DeliveryStatus, DigestRun, RunStatus


def _run(row: Row[Any]) -> DigestRun:
    m = row._mapping
    return DigestRun(
        id=m["id"],
        digest_id=m["digest_id"],
        period_start=m["period_start"],
        period_end=m["period_end"],
        status=RunStatus(m["status"]),
        claimed_by=m["claimed_by"],
        lease_expires_at=m["lease_expires_at"],
        created_at=m["created_at"],
        finished_at=m["finished_at"],
    )


def claim_run(
    conn: Connection,
    digest_id: str,
    start: datetime,
    end: datetime,
    owner: str,
    lease: timedelta,
    now: datetime,
    dead: str | None = None,
) -> DigestRun | None:
    """Claim the run of one period; None when it is finished or another worker holds it
    (`dead`: a holder known to have died, whose lease need not run out first)."""
    conn.execute(
        _insert(conn, digest_runs)
        .values(
            digest_id=digest_id,
            period_start=start,
            period_end=end,
            status=RunStatus.SENDING,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["digest_id", "period_start"])
    )
    taken = conn.execute(
        update(digest_runs)
        .where(
            digest_runs.c.digest_id == digest_id,
            digest_runs.c.period_start == start,
            digest_runs.c.status == RunStatus.SENDING,
            or_(
                digest_runs.c.lease_expires_at.is_(None),
                digest_runs.c.lease_expires_at < now,
                digest_runs.c.claimed_by == owner,
                digest_runs.c.claimed_by == (dead or owner),
            ),
        )
        .values(claimed_by=owner, lease_expires_at=now + lease)
    )
    if taken.rowcount != 1:
        return None
    row = conn.execute(
        select(digest_runs).where(
            digest_runs.c.digest_id == digest_id, digest_runs.c.period_start == start
        )
    ).one()
    return _run(row)


def finish_run(conn: Connection, run_id: int, now: datetime) -> None:
    conn.execute(
        update(digest_runs)
        .where(digest_runs.c.id == run_id)
        .values(status=RunStatus.DONE, finished_at=now, lease_expires_at=None)
    )


def runs(conn: Connection, digest_id: str, limit: int = 20) -> list[DigestRun]:
    """The newest periods first."""
    rows = conn.execute(
        select(digest_runs)
        .where(digest_runs.c.digest_id == digest_id)
        .order_by(digest_runs.c.period_start.desc())
        .limit(limit)
    )
    return [_run(row) for row in rows]


def record_delivery(
    conn: Connection,
    run_id: int,
    recipient: str,
    status: DeliveryStatus,
    now: datetime,
    error: str | None = None,
    message_id: str | None = None,
) -> None:
    """Record an attempt for one recipient; repeated attempts count up, the latest outcome wins."""
    statement = _insert(conn, deliveries).values(
        run_id=run_id,
        recipient=recipient,
        status=status,
        attempts=1,
        error=error,
        message_id=message_id,
        at=now,
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["run_id", "recipient"],
            set_={
                "status": statement.excluded.status,
                "attempts": deliveries.c.attempts + 1,
                "error": statement.excluded.error,
                "message_id": statement.excluded.message_id,
                "at": statement.excluded.at,
            },
        )
    )


def run_deliveries(conn: Connection, run_id: int) -> list[Delivery]:
    rows = conn.execute(
        select(deliveries).where(deliveries.c.run_id == run_id).order_by(deliveries.c.recipient)
    )
    return [
        Delivery(
            run_id=row.run_id,
            recipient=row.recipient,
            status=DeliveryStatus(row.status),
            attempts=row.attempts,
            at=row.at,
            error=row.error,
            message_id=row.message_id,
        )
        for row in rows
    ]


def delivered(conn: Connection, run_id: int) -> set[str]:
    """Recipients whose copy the mail server accepted: never to be sent again."""
    return set(
        conn.execute(
            select(deliveries.c.recipient).where(
                deliveries.c.run_id == run_id, deliveries.c.status == DeliveryStatus.SENT
            )
        ).scalars()
    )


def covered_until(conn: Connection, run_keys: list[str]) -> dict[str, datetime]:
    """For each recipient of these runs (a digest and its weekly edition), the end of the
    latest period they were served (sent, refused for good, or nothing they chose), by
    lower-cased address: where their next copy starts when they switch editions."""
    rows = conn.execute(
        select(deliveries.c.recipient, func.max(digest_runs.c.period_end))
        .join(digest_runs, digest_runs.c.id == deliveries.c.run_id)
        .where(
            digest_runs.c.digest_id.in_(run_keys),
            deliveries.c.status.in_(
                [DeliveryStatus.SENT, DeliveryStatus.REFUSED, DeliveryStatus.NOTHING]
            ),
        )
        .group_by(deliveries.c.recipient)
    ).all()
    found: dict[str, datetime] = {}
    for recipient, end in rows:
        moment = UTCDateTime().process_result_value(end, conn.dialect)
        if moment is not None:
            key = recipient.lower()
            found[key] = max(found.get(key, moment), moment)
    return found
