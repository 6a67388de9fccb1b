"""What a recipient may choose of a digest, and reading their choice from the page's form.

A digest offers the sections and topics it can hold (its filter's, else every one in the
config), and a weekly edition where the editor gave `weekly`. The form is read strictly: only
offered ids count, each once; ticking every section means "every section", including ones an
editor adds later; ticking no topic means every story.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aggregator.config import Config, Digest
from aggregator.digest.compose import digest_filter
from aggregator.exceptions import BadRequestError
from aggregator.types import WEEKLY, Choice


@dataclass(frozen=True)
class Offer:
    """The choices a digest's page shows: (id, title) pairs, and whether a weekly edition is
    offered (with its schedule in words)."""

    sections: tuple[tuple[str, str], ...]
    topics: tuple[tuple[str, str], ...]
    weekly: bool


@dataclass(frozen=True)
class Shown:
    """The choices as a form shows them: what is offered, what is ticked, and the schedules in
    words (`weekly` '' where no weekly edition is offered)."""

    sections: tuple[tuple[str, str], ...]
    topics: tuple[tuple[str, str], ...]
    schedule: str
    weekly: str
    chosen_sections: tuple[str, ...] | None
    chosen_topics: tuple[str, ...]
    is_weekly: bool


def shown(offered: Offer, choice: Choice | None, schedule: str, weekly: str) -> Shown:
    return Shown(
        offered.sections,
        offered.topics,
        schedule,
        weekly if offered.weekly else "",
        choice.sections if choice else None,
        choice.topics if choice else (),
        choice is not None and choice.frequency == WEEKLY,
    )


def encode(choice: Choice) -> str:
    """A choice as text, to carry in a signed confirmation link until the owner confirms."""
    return json.dumps(
        {
            "s": list(choice.sections) if choice.sections is not None else None,
            "t": list(choice.topics),
            "f": choice.frequency,
        },
        separators=(",", ":"),
    )


def decode(text: str, offered: Offer) -> Choice | None:
    """The choice `encode` wrote, kept to what the digest offers now; None if it is no choice."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    ids = {sid for sid, _ in offered.sections}
    sections, topics = data.get("s"), data.get("t")
    kept: tuple[str, ...] | None = None
    if isinstance(sections, list):
        kept = tuple(s for s in sections if isinstance(s, str) and s in ids) or None
    wanted = {tid for tid, _ in offered.topics}
    chosen = (
        tuple(t for t in topics if isinstance(t, str) and t in wanted)
        if isinstance(topics, list)
        else ()
    )
    frequency = WEEKLY if offered.weekly and data.get("f") == WEEKLY else None
    return Choice(kept, chosen, frequency)


def current(choice: Choice | None, offered: Offer) -> Choice | None:
    """A stored choice as the digest stands now: sections and topics an editor has since
    removed are dropped (a choice left with no section is the whole digest again, not an empty
    one), and a weekly edition no longer offered is the digest's own schedule."""
    if choice is None:
        return None
    sections = choice.sections
    if sections is not None:
        known = {sid for sid, _ in offered.sections}
        sections = tuple(s for s in sections if s in known) or None
        if sections is not None and len(sections) == len(known):
            sections = None
    topic_ids = {tid for tid, _ in offered.topics}
    topics = tuple(t for t in choice.topics if t in topic_ids)
    frequency = choice.frequency if offered.weekly else None
    return Choice(sections, topics, frequency)


def offer(config: Config, digest: Digest) -> Offer:
    rules = digest_filter(config, digest)
    sections = tuple(
        (s.id, s.title) for s in config.sections if not rules.sections or s.id in rules.sections
    )
    topics = tuple(
        (t.id, t.title) for t in config.topics if not rules.topics or t.id in rules.topics
    )
    return Offer(sections, topics, digest.weekly is not None)


def read_form(form: Mapping[str, Sequence[str]], offered: Offer) -> Choice:
    """The choice a submitted form makes; BadRequestError when it leaves every section out. A
    form without the choices' fields (a sign-up by address alone) chooses the whole digest."""
    if "choices" not in form:
        return Choice()
    section_ids = [sid for sid, _ in offered.sections]
    topic_ids = [tid for tid, _ in offered.topics]
    ticked = set(form.get("section", ()))
    sections: tuple[str, ...] | None = tuple(s for s in section_ids if s in ticked)
    if len(section_ids) > 1 and not sections:
        raise BadRequestError(
            "tick at least one section (to get nothing at all, unsubscribe instead)"
        )
    if sections is not None and len(sections) == len(section_ids):
        sections = None  # every section, those added later too
    if len(section_ids) <= 1:
        sections = None  # nothing to choose
    wanted_topics = set(form.get("topic", ()))
    topics = tuple(t for t in topic_ids if t in wanted_topics)
    frequency = WEEKLY if offered.weekly and form.get("frequency", [""])[0] == WEEKLY else None
    return Choice(sections, topics, frequency)
