"""How well sections, topics and story detection match a labelled set.

    python3 tasks.py bench quality [--items FILE] [--config FILE] [--show-errors]

Defaults to the evaluation set in tests/data/eval. Prints precision, recall and F1 per topic and
overall, section accuracy, and pairwise precision/recall/F1 of duplicate detection.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aggregator.config import load_config
from aggregator.evaluate import (
    duplicate_score,
    load_labelled,
    pairs,
    run,
    section_accuracy,
    topic_scores,
)

HERE = Path(__file__).resolve().parent.parent / "tests" / "data" / "eval"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=Path, default=HERE / "items.jsonl")
    parser.add_argument("--config", type=Path, default=HERE / "feeds.yaml")
    parser.add_argument("--show-errors", action="store_true", help="list every wrong decision")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    labelled = load_labelled(args.items)
    outcomes = run(config, labelled)
    print(f"{len(labelled)} labelled items, rules from {args.config}")
    print()
    print(f"{'topic':<14}{'precision':>10}{'recall':>8}{'F1':>7}{'tp':>6}{'fp':>5}{'fn':>5}")
    for topic, score in topic_scores(outcomes).items():
        print(
            f"{topic:<14}{score.precision:>10.3f}{score.recall:>8.3f}{score.f1:>7.3f}"
            f"{score.true_positives:>6}{score.false_positives:>5}{score.false_negatives:>5}"
        )
    print()
    print(f"sections: {section_accuracy(outcomes):.3f} accuracy")
    dup = duplicate_score(outcomes)
    print(
        f"duplicate pairs: precision {dup.precision:.3f}, recall {dup.recall:.3f}, "
        f"F1 {dup.f1:.3f} ({dup.true_positives} found, {dup.false_positives} wrong, "
        f"{dup.false_negatives} missed; target F1 >= 0.95 with precision >= 0.98)"
    )
    if args.show_errors:
        by_id = {o.item.id: o for o in outcomes}
        expected, found = pairs(outcomes)
        for title, wrong in (("wrong merges", found - expected), ("missed", expected - found)):
            print(f"\n{title}:")
            for a, b in sorted(wrong):
                print(f"  {a} {by_id[a].item.raw.title[:60]!r}")
                print(f"  {b} {by_id[b].item.raw.title[:60]!r}")
        print("\ntopic errors:")
        for o in outcomes:
            if o.topics != o.item.topics:
                extra, missing = sorted(o.topics - o.item.topics), sorted(o.item.topics - o.topics)
                print(f"  {o.item.id} +{extra} -{missing} {o.item.raw.title[:70]!r}")
        print("\nsection errors:")
        for o in outcomes:
            if o.section != o.item.section:
                title = o.item.raw.title[:60]
                print(f"  {o.item.id} {o.section} (want {o.item.section}) {title!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
