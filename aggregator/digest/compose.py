"""What goes in a digest: the stories first seen in its period, one entry per story, grouped.

A story counts for the period in which it was first seen: one whose first item came in an earlier
period was in that period's digest, so a later copy adds it to "also reported by" there, not a
second time here. Entries are the publishing view (`EntryView`): the same ids, links, summaries
and other sources as the feeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from aggregator.config import Config, Digest, Filter
from aggregator.digest.periods import Period
from aggregator.process.filters import ItemFilter
from aggregator.publish.catalog import Catalog
from aggregator.publish.publisher import base_url, source_names
from aggregator.publish.view import EntryView, entry_view
from aggregator.storage import Storage
from aggregator.types import Choice, Selected

SCAN_LIMIT = 500  # stories read per period; more than any digest shows


@dataclass(frozen=True)
class Group:
    title: str
    entries: tuple[EntryView, ...]


@dataclass(frozen=True)
class Story:
    """A story new in the period, with every source that carries it and when it was first
    seen (its earliest item)."""

    entry: EntryView
    sources: frozenset[str]
    first_seen: datetime


@dataclass(frozen=True)
class DigestView:
    digest: Digest
    period: Period
    groups: tuple[Group, ...]
    count: int  # stories shown
    total: int  # stories new in the period (more than `count` when max_items cut)
    sources: int  # distinct sources of the shown stories and their copies
    base: str
    site_title: str
    # every story new in the period, before max_items and any recipient's choice: what a
    # recipient's narrower copy is cut from (`narrowed`)
    pool: tuple[Story, ...] = ()
    config: Config | None = None

    @property
    def entries(self) -> tuple[EntryView, ...]:
        return tuple(e for g in self.groups for e in g.entries)


def digest_filter(config: Config, digest: Digest) -> Filter:
    if digest.filter is not None:
        return digest.filter
    output = next(o for o in config.outputs if o.id == digest.output)
    return output.filter


def _new_in(period: Period, selected: Selected) -> bool:
    return all(o.first_seen_at >= period.start for o in selected.also)


def compose(
    storage: Storage, config: Config, digest: Digest, period: Period, since: datetime | None = None
) -> DigestView:
    """The period's digest; `since` (earlier than the period's start) also reads the stories
    first seen from then on into the pool, for recipients whose last copy ended there (they
    switched editions), without adding them to the period's own copy."""
    rules = ItemFilter(digest_filter(config, digest))
    start = min(since, period.start) if since is not None else period.start
    selection = replace(rules.selection, seen_since=start)
    found = storage.select_items(
        selection,
        SCAN_LIMIT,
        lambda item: item.first_seen_at < period.end and rules.accepts_at(item, period.end),
    )
    fresh = [s for s in found if _new_in(Period(start, period.end), s)]
    catalog = Catalog(config)
    base = base_url(config)
    titles, urls = source_names(storage, config)
    pool = tuple(
        Story(
            entry_view(s, catalog, base, titles, urls, rules.selection.every_item),
            frozenset({s.item.source_id, *(o.source_id for o in s.also)}),
            min([s.item.first_seen_at, *(o.first_seen_at for o in s.also)]),
        )
        for s in fresh
    )
    own = tuple(story for story in pool if story.first_seen >= period.start)
    return replace(_shaped(digest, config, period, own, base), pool=pool)


def _shaped(
    digest: Digest, config: Config, period: Period, pool: tuple[Story, ...], base: str
) -> DigestView:
    shown = pool[: digest.max_items]
    groups = _group(digest, config, [story.entry for story in shown])
    sources = frozenset().union(*(story.sources for story in shown))
    return DigestView(
        digest,
        period,
        groups,
        len(shown),
        len(pool),
        len(sources),
        base,
        config.publishing.title,
        pool,
        config,
    )


def wanted(entry: EntryView, choice: Choice) -> bool:
    """Whether a recipient who made `choice` gets this story: one of their sections, and (where
    they named topics) one of their topics."""
    sections = {c.term for c in entry.categories if c.scheme.endswith("sections/")}
    topics = {c.term for c in entry.categories if c.scheme.endswith("topics/")}
    if choice.sections is not None and sections.isdisjoint(choice.sections):
        return False
    return not choice.topics or not topics.isdisjoint(choice.topics)


def narrowed(view: DigestView, choice: Choice | None, start: datetime | None = None) -> DigestView:
    """The digest as a recipient with `choice` gets it: only the stories they want, first seen
    from `start` (default: the period's start) to the period's end, cut to `max_items` after
    choosing (so a narrow choice still gets its share), grouped anew."""
    start = start or view.period.start
    narrows = choice is not None and choice.narrows
    if (not narrows and start == view.period.start) or view.config is None:
        return view
    pool = tuple(
        story
        for story in view.pool
        if story.first_seen >= start and (choice is None or wanted(story.entry, choice))
    )
    period = replace(view.period, start=start)
    return _shaped(view.digest, view.config, period, pool, view.base)


def _group(digest: Digest, config: Config, entries: Sequence[EntryView]) -> tuple[Group, ...]:
    if digest.group_by == "none":
        return (Group("", tuple(entries)),) if entries else ()
    buckets: dict[str, list[EntryView]] = {}
    for entry in entries:
        buckets.setdefault(_heading(digest, config, entry), []).append(entry)
    order = _order(digest, config)
    ranked = sorted(buckets, key=lambda title: (order.get(title, len(order)), title))
    return tuple(Group(title, tuple(buckets[title])) for title in ranked)


def _heading(digest: Digest, config: Config, entry: EntryView) -> str:
    if digest.group_by == "source":
        return entry.source_title
    scheme = "sections/" if digest.group_by == "section" else "topics/"
    labels = [c.label for c in entry.categories if c.scheme.endswith(scheme)]
    if digest.group_by == "topic":
        order = _order(digest, config)
        labels.sort(key=lambda label: order.get(label, len(order)))
    return labels[0] if labels else "Other news"


def _order(digest: Digest, config: Config) -> dict[str, int]:
    """Headings in the order editors declared them in feeds.yaml."""
    if digest.group_by == "section":
        return {s.title: n for n, s in enumerate(config.sections)}
    if digest.group_by == "topic":
        return {t.title: n for n, t in enumerate(config.topics)}
    return {}
