"""Filing and story detection against the labelled evaluation set (tests/data/eval).

The thresholds are the issue's targets for duplicates, and a floor just under today's figures
for topics, so a change that makes the rules or the matching worse fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.evaluate import (
    Outcome,
    duplicate_score,
    load_labelled,
    run,
    section_accuracy,
    topic_scores,
)
from tests.conftest import DATA

EVAL = DATA / "eval"


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    return run(load_config(EVAL / "feeds.yaml"), load_labelled(EVAL / "items.jsonl"))


def test_the_set_is_what_its_readme_says(outcomes: list[Outcome]) -> None:
    labels = [o.item.story for o in outcomes]
    groups = {label for label in labels if labels.count(label) > 1}
    assert len(outcomes) >= 300 and len(groups) >= 60
    assert {o.item.source for o in outcomes} >= {"ap-world", "aljazeera-arabic", "france24-fr"}


def test_duplicate_pairs_meet_the_target(outcomes: list[Outcome]) -> None:
    score = duplicate_score(outcomes)
    assert score.precision >= 0.98, score
    assert score.f1 >= 0.95, score


def test_topics_and_sections_do_not_get_worse(outcomes: list[Outcome]) -> None:
    every = topic_scores(outcomes)["all"]
    assert every.precision >= 0.88 and every.recall >= 0.95 and every.f1 >= 0.92, every
    assert section_accuracy(outcomes) >= 0.6


def test_nothing_is_dropped_or_lost(outcomes: list[Outcome]) -> None:
    """Every labelled item was stored and filed (the eval config has no source filters)."""
    assert all(o.story is not None and o.section for o in outcomes)


def test_items_are_read_with_their_labels() -> None:
    first = load_labelled(Path(EVAL / "items.jsonl"))[0]
    assert first.id == "e001" and first.raw.published == first.published
    assert first.section and first.story
