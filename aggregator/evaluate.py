"""Score the filing rules and story detection against a labelled set of items.

The set is JSON Lines (see tests/data/eval/README.md): each item as a feed carries it, with the
expected section, topics and story label. The items go through the real pipeline (normalise,
the source's filters, filing, storage and story linking, on a throwaway SQLite database) in
order of publication, and what was stored is compared with the labels. Editors can label items
of their own and run `bench/quality.py` on them to see what a rule change does.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations
from pathlib import Path

from aggregator.config import Config
from aggregator.feed.normalise import RawEntry, normalise
from aggregator.process.pipeline import Processor
from aggregator.storage import Storage


@dataclass(frozen=True)
class Labelled:
    """One item of the set with its labels."""

    id: str
    source: str
    raw: RawEntry
    published: datetime
    section: str
    topics: frozenset[str]
    story: str
    kind: str = ""


def load_labelled(path: Path) -> list[Labelled]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        data = json.loads(line)
        published = datetime.fromisoformat(data["published"].replace("Z", "+00:00"))
        raw = RawEntry(
            guid=data.get("guid"),
            title=data["title"],
            link=data.get("url"),
            summary=data.get("summary", ""),
            categories=tuple(data.get("categories", ())),
            language=data.get("language"),
            published=published,
        )
        items.append(
            Labelled(
                data["id"],
                data["source"],
                raw,
                published,
                data["section"],
                frozenset(data.get("topics", ())),
                data["story"],
                data.get("kind", ""),
            )
        )
        if not items[-1].id:
            raise ValueError(f"{path}:{number}: item without an id")
    return items


@dataclass(frozen=True)
class Outcome:
    """What the pipeline decided for one labelled item (None: dropped by a source filter)."""

    item: Labelled
    section: str | None
    topics: frozenset[str]
    story: int | None
    stored_id: int | None = None


def run(config: Config, labelled: Sequence[Labelled]) -> list[Outcome]:
    """Feed the items through the pipeline in publication order, one at a time, with the clock
    at each item's publication time (so the time window behaves as it would live)."""
    ordered = sorted(labelled, key=lambda item: (item.published, item.id))
    now = [ordered[0].published if ordered else datetime.now().astimezone()]
    processor = Processor(config)
    outcomes: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory() as folder:
        storage = Storage.open(f"sqlite:///{folder}/evaluate.db", clock=lambda: now[0])
        try:
            storage.sync_sources(config.sources)
            for item in ordered:
                now[0] = item.published + timedelta(minutes=1)
                entries = normalise([item.raw], item.raw.link or "", now[0])
                kept = processor.keep(item.source, entries)
                if not kept.entries:
                    outcomes[item.id] = Outcome(item, None, frozenset(), None)
                    continue
                report = storage.save_entries(item.source, kept.entries, filer=processor)
                stored_id = (report.new or report.updated or (None,))[0]
                if stored_id is None:  # the same key again in one source: the stored one
                    outcomes[item.id] = Outcome(item, None, frozenset(), None)
                    continue
                outcomes[item.id] = _outcome(storage, item, stored_id)
            # an item updated in place later may have changed: read every outcome back
            for item_id, outcome in list(outcomes.items()):
                if outcome.story is not None:
                    stored = storage.item(outcome.stored_id or 0)
                    if stored is not None:
                        outcomes[item_id] = Outcome(
                            outcome.item,
                            stored.section_id,
                            frozenset(stored.topics),
                            _story(stored.story_id, stored.id),
                            outcome.stored_id,
                        )
        finally:
            storage.close()
    return [outcomes[item.id] for item in labelled]


def _outcome(storage: Storage, item: Labelled, stored_id: int) -> Outcome:
    stored = storage.item(stored_id)
    assert stored is not None
    return Outcome(
        item,
        stored.section_id,
        frozenset(stored.topics),
        _story(stored.story_id, stored.id),
        stored_id,
    )


def _story(story_id: int | None, item_id: int) -> int:
    """An item alone has no story row: it stands for its own story (negated, to stay apart)."""
    return story_id if story_id is not None else -item_id


@dataclass(frozen=True)
class Score:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positives + self.false_negatives
        return self.true_positives / wanted if wanted else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def topic_scores(outcomes: Iterable[Outcome]) -> dict[str, Score]:
    """Per topic, and "all" for the micro average."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for outcome in outcomes:
        for topic in outcome.item.topics | outcome.topics:
            expected, got = topic in outcome.item.topics, topic in outcome.topics
            kind = "tp" if expected and got else "fp" if got else "fn"
            counts[topic][kind] += 1
            counts["all"][kind] += 1
    return {t: Score(c["tp"], c["fp"], c["fn"]) for t, c in sorted(counts.items())}


def section_accuracy(outcomes: Sequence[Outcome]) -> float:
    right = sum(1 for o in outcomes if o.section == o.item.section)
    return right / len(outcomes) if outcomes else 1.0


def pairs(outcomes: Sequence[Outcome]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(expected, found) duplicate pairs of item ids."""
    expected: set[tuple[str, str]] = set()
    found: set[tuple[str, str]] = set()
    by_label: dict[str, list[str]] = defaultdict(list)
    by_story: dict[int, list[str]] = defaultdict(list)
    for outcome in outcomes:
        by_label[outcome.item.story].append(outcome.item.id)
        if outcome.story is not None:
            by_story[outcome.story].append(outcome.item.id)
    for group in by_label.values():
        expected.update(combinations(sorted(group), 2))
    for group in by_story.values():
        found.update(combinations(sorted(group), 2))
    return expected, found


def duplicate_score(outcomes: Sequence[Outcome]) -> Score:
    expected, found = pairs(outcomes)
    return Score(len(expected & found), len(found - expected), len(expected - found))
