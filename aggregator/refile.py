"""Re-apply the current section and topic rules to every stored item (`aggregator recategorise`).

Rules change; stored items keep the filing of the rules they arrived under until this runs. It
reports what moves, per section and topic (items in, items out, with examples), so an editor
can see what a rule change does before committing to it (`--dry-run` writes nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aggregator.process.pipeline import Processor
from aggregator.storage import Storage
from aggregator.types import Filing, Item

EXAMPLES = 3
BATCH = 500


@dataclass
class Movement:
    """Items that came into and went out of one section or topic."""

    kind: str  # "section" or "topic"
    name: str
    came: int = 0
    left: int = 0
    came_examples: list[Item] = field(default_factory=list)
    left_examples: list[Item] = field(default_factory=list)

    def add(self, item: Item, came: bool) -> None:
        if came:
            self.came += 1
            if len(self.came_examples) < EXAMPLES:
                self.came_examples.append(item)
        else:
            self.left += 1
            if len(self.left_examples) < EXAMPLES:
                self.left_examples.append(item)


@dataclass
class RefileReport:
    checked: int = 0
    changed: int = 0  # items whose section or topics changed
    rewritten: int = 0  # items written back (changed, or only their reasons differ)
    movements: dict[tuple[str, str], Movement] = field(default_factory=dict)

    def move(self, kind: str, name: str, item: Item, came: bool) -> None:
        self.movements.setdefault((kind, name), Movement(kind, name)).add(item, came)


def recategorise(
    storage: Storage,
    processor: Processor,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> RefileReport:
    """File every stored item again with the processor's rules; write the differences unless
    `dry_run`. Story leads are chosen again too (source priorities may have changed)."""
    report = RefileReport()
    after = 0
    while True:
        batch = storage.items_after(after, BATCH)
        if not batch:
            break
        after = batch[-1].item.id
        writes: list[tuple[int, Filing]] = []
        for stored in batch:
            item = stored.item
            categories = processor.categorise(item.source_id, item.entry)
            section = categories.section.section_id or None
            topics = {t.topic_id: t.as_json() for t in categories.topics}
            moved = False
            if section != item.section_id:
                moved = True
                if item.section_id:
                    report.move("section", item.section_id, item, came=False)
                if section:
                    report.move("section", section, item, came=True)
            for topic in sorted(set(topics) ^ set(item.topics)):
                moved = True
                report.move("topic", topic, item, came=topic in topics)
            report.checked += 1
            report.changed += moved
            reason = categories.section.stored()
            if moved or reason != stored.section_reason or topics != stored.topic_reasons:
                texts = {t.topic_id: t.as_json_text() for t in categories.topics}
                writes.append((item.id, Filing(section, reason, texts)))
        report.rewritten += len(writes)
        if writes and not dry_run:
            storage.refile(writes)
        if progress:
            progress(len(batch))
    if not dry_run:
        storage.settle_story_leads()
    return report
