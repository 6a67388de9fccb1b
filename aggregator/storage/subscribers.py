"""People who signed up for a digest on the web: pending until confirmed, kept when they leave."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, or_, select, update

from aggregator.storage.dialect import insert as _insert
from aggregator.storage.tables import subscribers as t
from aggregator.types import Subscriber, SubscriberStatus


def _subscriber(row: Row[Any]) -> Subscriber:
    return Subscriber(
        digest_id=row.digest_id,
        email=row.email,
        status=SubscriberStatus(row.status),
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        unsubscribed_at=row.unsubscribed_at,
    )


def _normal(email: str) -> str:
    """One form per address: lower case throughout (mailboxes that tell `Ann` from `ann` apart
    are vanishingly rare, and one person must not hold two rows with two states)."""
    return email.strip().lower()


def get(conn: Connection, digest_id: str, email: str) -> Subscriber | None:
    row = conn.execute(
        select(t).where(t.c.digest_id == digest_id, t.c.email == _normal(email))
    ).first()
    return _subscriber(row) if row else None


def add(conn: Connection, digest_id: str, email: str, now: datetime) -> Subscriber:
    """Sign someone up (pending); someone who had left starts over, anyone else is unchanged."""
    email = _normal(email)
    existing = get(conn, digest_id, email)
    if existing is None:
        conn.execute(
            _insert(conn, t)
            .values(
                digest_id=digest_id, email=email, status=SubscriberStatus.PENDING, created_at=now
            )
            .on_conflict_do_nothing(index_elements=["digest_id", "email"])
        )
    elif existing.status is SubscriberStatus.UNSUBSCRIBED:
        # pending again, but `unsubscribed_at` stays: until the owner confirms, the address is
        # still unsubscribed (a stranger cannot sign a YAML recipient back up)
        conn.execute(
            update(t)
            .where(t.c.digest_id == digest_id, t.c.email == email)
            .values(status=SubscriberStatus.PENDING, created_at=now, confirmed_at=None)
        )
    result = get(conn, digest_id, email)
    assert result is not None
    return result


def claim_confirmation(
    conn: Connection, digest_id: str, email: str, now: datetime, every: timedelta
) -> bool:
    """True (and the time kept) when no confirmation went to this address in `every`: one
    statement, so two processes asked at once cannot both send."""
    result = conn.execute(
        update(t)
        .where(
            t.c.digest_id == digest_id,
            t.c.email == _normal(email),
            or_(t.c.confirm_sent_at.is_(None), t.c.confirm_sent_at <= now - every),
        )
        .values(confirm_sent_at=now)
    )
    return result.rowcount == 1


def forget_confirmation(conn: Connection, digest_id: str, email: str) -> None:
    """The confirmation could not be sent: the next request may try at once."""
    conn.execute(
        update(t)
        .where(t.c.digest_id == digest_id, t.c.email == _normal(email))
        .values(confirm_sent_at=None)
    )


def _set_status(
    conn: Connection,
    digest_id: str,
    email: str,
    status: SubscriberStatus,
    now: datetime,
    allowed_from: tuple[SubscriberStatus, ...],
) -> bool:
    column = "confirmed_at" if status is SubscriberStatus.CONFIRMED else "unsubscribed_at"
    result = conn.execute(
        update(t)
        .where(
            t.c.digest_id == digest_id,
            t.c.email == _normal(email),
            t.c.status.in_([s.value for s in allowed_from]),
        )
        .values(status=status, **{column: now})
    )
    return result.rowcount == 1


def confirm(conn: Connection, digest_id: str, email: str, now: datetime) -> bool:
    """Double opt-in completed; False when there was no pending sign-up."""
    return _set_status(
        conn, digest_id, email, SubscriberStatus.CONFIRMED, now, (SubscriberStatus.PENDING,)
    )


def unsubscribe(conn: Connection, digest_id: str, email: str, now: datetime) -> bool:
    """Stop sending; False when the address was not subscribed (nothing changes)."""
    return _set_status(
        conn,
        digest_id,
        email,
        SubscriberStatus.UNSUBSCRIBED,
        now,
        (SubscriberStatus.PENDING, SubscriberStatus.CONFIRMED),
    )


def listing(
    conn: Connection, digest_id: str, status: SubscriberStatus | None = None
) -> list[Subscriber]:
    query = select(t).where(t.c.digest_id == digest_id).order_by(t.c.email)
    if status is not None:
        query = query.where(t.c.status == status)
    return [_subscriber(row) for row in conn.execute(query)]


def suppress(conn: Connection, digest_id: str, email: str, now: datetime) -> bool:
    """Never send this digest to this address again, whether it signed up on the web or is a
    YAML recipient; False when it was suppressed already."""
    if unsubscribe(conn, digest_id, email, now):
        return True
    existing = get(conn, digest_id, email)
    if existing is not None:
        return False  # already unsubscribed
    inserted = conn.execute(
        _insert(conn, t)
        .values(
            digest_id=digest_id,
            email=_normal(email),
            status=SubscriberStatus.UNSUBSCRIBED,
            created_at=now,
            unsubscribed_at=now,
        )
        .on_conflict_do_nothing(index_elements=["digest_id", "email"])
        .returning(t.c.email)
    )
    return inserted.first() is not None
