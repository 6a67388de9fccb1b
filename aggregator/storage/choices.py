"""What digest recipients chose: sections, topics, how often (`digest_choices`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from aggregator.storage.dialect import insert as _insert
from aggregator.storage.tables import digest_choices as t
from aggregator.types import Choice


def _choice(row: Row[Any]) -> Choice:
    return Choice(
        tuple(row.sections) if row.sections is not None else None,
        tuple(row.topics or ()),
        row.frequency,
    )


def _normal(email: str) -> str:
    return email.strip().lower()  # as subscribers keep addresses


def get(conn: Connection, digest_id: str, email: str) -> Choice | None:
    row = conn.execute(
        select(t).where(t.c.digest_id == digest_id, t.c.email == _normal(email))
    ).first()
    return _choice(row) if row else None


def of_digest(conn: Connection, digest_id: str) -> dict[str, Choice]:
    """Every recipient's choice, by lower-cased address."""
    rows = conn.execute(select(t).where(t.c.digest_id == digest_id)).all()
    return {row.email: _choice(row) for row in rows}


def put(conn: Connection, digest_id: str, email: str, choice: Choice, now: datetime) -> None:
    values = {
        "sections": list(choice.sections) if choice.sections is not None else None,
        "topics": list(choice.topics),
        "frequency": choice.frequency,
        "updated_at": now,
    }
    statement = _insert(conn, t).values(digest_id=digest_id, email=_normal(email), **values)
    conn.execute(
        statement.on_conflict_do_update(index_elements=[t.c.digest_id, t.c.email], set_=values)
    )
