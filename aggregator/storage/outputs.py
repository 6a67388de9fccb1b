"""What published feeds need from the database besides items: the revision counter that tells a
web process its cached documents may be stale, and each output's last announced state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from aggregator.storage.dialect import insert as _insert
from aggregator.storage.tables import output_state, revisions

ITEMS = "items"


def revision(conn: Connection) -> int:
    value = conn.execute(select(revisions.c.value).where(revisions.c.name == ITEMS)).scalar()
    return int(value or 0)


# Built once: a statement made per call costs its construction and cache key every time
_BUMP = update(revisions).where(revisions.c.name == ITEMS).values(value=revisions.c.value + 1)


def bump(conn: Connection) -> None:
    """Move the counter in the transaction that changes items (it commits or rolls back with it)."""
    conn.execute(_BUMP)


def announce(
    conn: Connection, output_id: str, content_hash: str, count: int, now: datetime
) -> bool:
    """Record that an output's first page now hashes to `content_hash`; True for the one caller
    that changed it (so only one of several workers pings the hub), False if it was known."""
    known = conn.execute(
        select(output_state.c.content_hash).where(output_state.c.output_id == output_id)
    ).scalar()
    if known == content_hash:
        return False
    values = {"content_hash": content_hash, "item_count": count, "changed_at": now}
    if known is None:
        inserted = conn.execute(
            _insert(conn, output_state)
            .values(output_id=output_id, **values)
            .on_conflict_do_nothing(index_elements=["output_id"])
            .returning(output_state.c.output_id)
        )
        return inserted.first() is not None
    changed = conn.execute(
        update(output_state)
        .where(output_state.c.output_id == output_id, output_state.c.content_hash == known)
        .values(**values)
    )
    return changed.rowcount == 1
