"""One story, one item: stories linked as items are stored, on real SQLite and real PostgreSQL."""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event

from aggregator.config import Config, Dedupe, Filter, Section, Source, Topic
from aggregator.exceptions import StorageError
from aggregator.process import dedupe
from aggregator.process.dedupe import SimilarityIndex, alike, similarity
from aggregator.process.filters import ItemFilter
from aggregator.process.fingerprint import fingerprint
from aggregator.process.pipeline import Processor
from aggregator.refile import recategorise
from aggregator.storage import Storage
from aggregator.types import Entry, FetchRecord, Filing, SaveReport, Selection
from tests.conftest import _reset_postgres
from tests.support import Clock

WIRE = (
    "CAIRO (AP) — Indirect talks between Israel and Hamas on the next phase of the Gaza "
    "ceasefire stalled Wednesday over the mandate of a proposed international stabilization "
    "force, two Egyptian officials said."
)
OTHER = (
    "Aid trucks lined up at the Kerem Shalom crossing on Wednesday as the United Nations said "
    "deliveries of shelter materials to Gaza remained far below what families need for winter."
)


def config(**dedupe: object) -> Config:
    return Config(
        sections=(Section("world", "World"), Section("opinion", "Opinion", paths=("/opinion/",))),
        topics=(Topic("palestine", "Palestine", keywords=("Gaza", "Palestin*")),),
        sources=tuple(
            Source(sid, f"https://{sid}.example/feed", "world", priority=priority)
            for sid, priority in (("ap", 10), ("herald", 0), ("star", 0), ("bbc", 5))
        ),
        dedupe=Dedupe(**dedupe),  # type: ignore[arg-type]
    )


def entry(key: str, title: str, summary: str, link: str | None = None, **kw: object) -> Entry:
    link = link or f"https://news.example/{key}"
    return Entry(key=key, title=title, link=link, canonical_link=link, summary=summary, **kw)  # type: ignore[arg-type]


@pytest.fixture
def processor(storage: Storage) -> Processor:
    proc = Processor(config())
    storage.sync_sources(proc.config.sources)
    return proc


def story_of(storage: Storage, item_id: int) -> int:
    """The item's story; an item alone has no story row, and stands for itself (negated)."""
    item = storage.item(item_id)
    assert item is not None
    return item.story_id if item.story_id is not None else -item.id


def test_a_wire_copy_from_another_source_joins_the_story(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    first = storage.save_entries("herald", [entry("h1", "Gaza truce talks stall", WIRE)], processor)
    clock.advance(minutes=40)
    copy = WIRE.replace("CAIRO (AP) — ", "").replace("stabilization", "stabilisation")
    second = storage.save_entries(
        "star",
        [entry("s1", "Gaza ceasefire talks in Cairo hit snag", copy + " More later.")],
        processor,
    )
    unrelated = storage.save_entries("star", [entry("s2", "Aid trucks wait", OTHER)], processor)
    assert story_of(storage, first.new[0]) == story_of(storage, second.new[0])
    assert story_of(storage, unrelated.new[0]) != story_of(storage, first.new[0])
    details = storage.item_details(second.new[0])
    assert details is not None
    assert details.story_reason is not None and details.story_reason["by"] == "text"
    assert details.story_reason["item"] == first.new[0] and details.story_reason["score"] >= 0.5
    # the earliest item leads while both sources have the same priority
    assert [m.item.id for m in details.members if m.lead] == [first.new[0]]


def test_the_higher_priority_source_leads_the_story(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    local = storage.save_entries("herald", [entry("h1", "Gaza talks stall", WIRE)], processor)
    clock.advance(hours=1)
    wire = storage.save_entries(
        "ap", [entry("a1", "Gaza talks stall, officials say", WIRE)], processor
    )
    details = storage.item_details(local.new[0])
    assert details is not None
    assert [m.item.id for m in details.members if m.lead] == [wire.new[0]]


def test_the_same_link_in_two_sources_is_one_story(storage: Storage, processor: Processor) -> None:
    link = "https://www.bbc.co.uk/news/world-middle-east-68123456"
    a = storage.save_entries("bbc", [entry("b1", "Short", "Gaza.", link=link)], processor)
    b = storage.save_entries("herald", [entry("x9", "Different", "Words.", link=link)], processor)
    assert story_of(storage, a.new[0]) == story_of(storage, b.new[0])
    details = storage.item_details(b.new[0])
    assert details is not None and details.story_reason == {"by": "link"}


def test_alike_items_in_one_batch_share_a_story(storage: Storage, processor: Processor) -> None:
    report = storage.save_entries(
        "herald",
        [
            entry("x1", "Gaza talks stall", WIRE),
            entry("x2", "Gaza talks stall over force", WIRE + " Talks resume Thursday."),
            entry("x3", "Aid trucks wait", OTHER),
        ],
        processor,
    )
    x1, x2, x3 = (story_of(storage, i) for i in report.new)
    assert x1 == x2 != x3


def test_an_edited_headline_updates_the_item_and_keeps_its_story(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    first = storage.save_entries("ap", [entry("a1", "Gaza talks stall", WIRE)], processor)
    story = story_of(storage, first.new[0])
    clock.advance(minutes=20)
    edited = storage.save_entries(
        "ap", [entry("a1", "Gaza ceasefire talks stall over international force", WIRE)], processor
    )
    assert edited.new == () and edited.updated == first.new
    assert story_of(storage, first.new[0]) == story
    assert storage.count_items() == 1


def test_daily_series_with_different_numbers_stay_apart(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    text = "These are the key events on day {} of Russia's war on Ukraine, as it happened."
    one = storage.save_entries(
        "bbc", [entry("d1", "Key events, day 1,727", text.format("1,727"))], processor
    )
    clock.advance(days=1)
    two = storage.save_entries(
        "bbc", [entry("d2", "Key events, day 1,728", text.format("1,728"))], processor
    )
    assert story_of(storage, one.new[0]) != story_of(storage, two.new[0])


def test_items_further_apart_than_the_window_are_not_merged(storage: Storage, clock: Clock) -> None:
    processor = Processor(config(window=timedelta(hours=6)))
    storage.sync_sources(processor.config.sources)
    one = storage.save_entries("herald", [entry("h1", "Gaza talks stall", WIRE)], processor)
    clock.advance(hours=7)
    two = storage.save_entries("star", [entry("s1", "Gaza talks stall", WIRE)], processor)
    assert story_of(storage, one.new[0]) != story_of(storage, two.new[0])


def test_with_dedupe_off_every_item_is_its_own_story(storage: Storage) -> None:
    processor = Processor(config(enabled=False))
    storage.sync_sources(processor.config.sources)
    report = storage.save_entries(
        "herald", [entry("a", "Gaza talks", WIRE), entry("b", "Gaza talks", WIRE)], processor
    )
    assert story_of(storage, report.new[0]) != story_of(storage, report.new[1])


def test_the_index_is_rebuilt_from_storage_by_another_process(
    storage: Storage, database_url: str, clock: Clock
) -> None:
    """A second worker (its own storage and index) finds the stories the first one stored."""
    first = Processor(config())
    storage.sync_sources(first.config.sources)
    stored = storage.save_entries("herald", [entry("h1", "Gaza talks stall", WIRE)], first)
    other_storage = Storage.open(database_url, clock=clock)
    try:
        second = Processor(config())  # a fresh, empty index, as after a restart
        assert other_storage.warm_index(second.index) == 1  # type: ignore[arg-type]
        copy = other_storage.save_entries("star", [entry("s1", "Gaza talks", WIRE)], second)
        # and what the second worker stored reaches the first one's index by catching up
        third = storage.save_entries("bbc", [entry("b1", "Gaza talks", WIRE + " Update.")], first)
    finally:
        other_storage.close()
    stories = {story_of(storage, i) for i in (*stored.new, *copy.new, *third.new)}
    assert len(stories) == 1


def test_an_editor_can_undo_a_wrong_merge(storage: Storage, processor: Processor) -> None:
    report = storage.save_entries(
        "herald", [entry("x1", "Gaza talks", WIRE), entry("x2", "Gaza talks", WIRE)], processor
    )
    a, b = report.new
    assert story_of(storage, a) == story_of(storage, b)
    new_story = storage.detach_item(b)
    assert new_story is not None and story_of(storage, b) == new_story != story_of(storage, a)
    details = storage.item_details(b)
    assert details is not None and details.pinned and details.story_reason == {"by": "editor"}
    assert [m.lead for m in details.members] == [True]
    assert storage.detach_item(999_999) is None


def test_pruning_removes_empty_stories_and_moves_the_lead(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    ap = storage.save_entries("ap", [entry("a1", "Gaza talks stall", WIRE)], processor)
    clock.advance(days=2)
    local = storage.save_entries("herald", [entry("h1", "Gaza talks stall", WIRE)], processor)
    clock.advance(days=1)
    storage.save_entries("herald", [entry("h1", "Gaza talks stall", WIRE)], processor)  # seen
    assert storage.prune_items(timedelta(days=2)) == 1  # the AP item left its feed long ago
    details = storage.item_details(local.new[0])
    assert details is not None and [m.lead for m in details.members] == [True]
    assert storage.item(ap.new[0]) is None


def test_recategorise_moves_items_to_the_current_rules(storage: Storage, clock: Clock) -> None:
    old = Processor(config())
    storage.sync_sources(old.config.sources)
    report = storage.save_entries(
        "herald",
        [
            entry("o1", "Why the truce will fail", OTHER, link="https://h.example/opinion/1"),
            entry("n1", "Gaza talks stall", WIRE),
            entry("n2", "Markets rally", "Stocks rose on Friday as oil fell back."),
        ],
        old,
    )
    new_rules = Config(
        sections=(Section("world", "World"), Section("opinion", "Opinion")),  # path rule gone
        topics=(
            Topic("palestine", "Palestine", keywords=("Palestin*",)),  # no longer "Gaza"
            Topic("markets", "Markets", keywords=("stocks", "markets")),
        ),
        sources=old.config.sources,
    )
    dry = recategorise(storage, Processor(new_rules), dry_run=True)
    assert dry.checked == 3 and dry.changed == 3  # o1: section and topic; n1, n2: a topic
    assert storage.item(report.new[0]).section_id == "opinion"  # type: ignore[union-attr]
    moves = {key: (m.came, m.left) for key, m in dry.movements.items()}
    assert moves == {
        ("section", "opinion"): (0, 1),
        ("section", "world"): (1, 0),
        ("topic", "palestine"): (0, 2),
        ("topic", "markets"): (1, 0),
    }
    done = recategorise(storage, Processor(new_rules))
    assert done.changed == 3
    o1, n1, n2 = (storage.item(i) for i in report.new)
    assert o1 is not None and o1.section_id == "world" and o1.topics == ()
    assert n1 is not None and n1.topics == ()
    assert n2 is not None and n2.topics == ("markets",)
    assert recategorise(storage, Processor(new_rules)).changed == 0


# -- the index itself -------------------------------------------------------------------------


@pytest.fixture(params=["as shipped", "small runs and blocks"])
def sizes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The index as shipped, and with runs and signature blocks so small that a thousand items
    fill many of each: merging into a full run, starting a new one, a big batch split into runs,
    signatures gathered from several blocks, and runs whose slots span too much for 16-bit
    offsets all happen."""
    if request.param != "as shipped":
        monkeypatch.setattr(SimilarityIndex, "RECENT", 8)
        monkeypatch.setattr(SimilarityIndex, "YOUNG", 32)
        monkeypatch.setattr(SimilarityIndex, "OLD", 100)
        monkeypatch.setattr(dedupe._Rows, "BLOCK", 64)
        monkeypatch.setattr(dedupe, "_OFFSET_SPAN", 90)  # runs whose slots span more: 32 bits
    return str(request.param)


def test_the_index_finds_alike_items_and_forgets_old_ones() -> None:
    index = SimilarityIndex(0.5, timedelta(hours=72))
    start = datetime(2026, 11, 20, tzinfo=UTC)
    wire = fingerprint(entry("a", "Gaza talks stall", WIRE))
    copy = fingerprint(entry("b", "Gaza truce talks stall", WIRE.replace("CAIRO (AP) — ", "")))
    other = fingerprint(entry("c", "Aid trucks wait", OTHER))
    assert wire and copy and other
    assert similarity(wire, copy) >= 0.5 and alike(wire, copy, 0.5)
    assert similarity(wire, other) < 0.2
    index.add_many([(1, wire, start), (2, other, start)])
    assert [m.item_id for m in index.similar(copy, start + timedelta(hours=1))] == [1]
    # many unrelated items later, the match is still found (from the big sorted run)
    filler = [
        (
            10 + n,
            fingerprint(entry(f"f{n}", f"Story {n}", f"{OTHER} Number {n} {n * 7}.")) or b"",
            start,
        )
        for n in range(600)
    ]
    index.add_many(filler[:300])
    for row in filler[300:]:
        index.add(*row)
    assert 1 in [m.item_id for m in index.similar(copy, start)]
    assert index.expire(start + timedelta(hours=73)) == 602
    assert len(index) == 0 and index.similar(copy, start + timedelta(hours=73)) == []
    index.add(2000, wire, start + timedelta(hours=80))
    assert [m.item_id for m in index.similar(copy, start + timedelta(hours=80))] == [2000]


@pytest.mark.parametrize("span", [90, 1 << 16], ids=["32-bit offsets too", "16-bit offsets"])
def test_a_run_merges_in_place_and_holds_what_a_sorted_list_would(
    span: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs merge in place, a block at a time, from the last entry: after each merge (keys in
    any order or sorted, another run's offsets, items dying between merges, with room or not)
    the run holds exactly the live entries and the new ones, keys sorted; and where it had room,
    its arrays are the same ones (the memory is not made anew)."""
    monkeypatch.setattr(dedupe, "_MERGE_BLOCK", 7)  # many blocks, and partial ones
    monkeypatch.setattr(dedupe, "_OFFSET_SPAN", span)
    rng = np.random.default_rng(11)
    in_place = 0
    for _ in range(300):
        alive = np.ones(2000, dtype=bool)
        run, slot = dedupe._Run(), int(rng.integers(0, 50))
        held: list[tuple[int, int]] = []
        for _ in range(int(rng.integers(1, 8))):
            count = int(rng.integers(0, 30))
            keys = rng.integers(0, 40, count).astype(np.uint32)
            slots = np.arange(slot, slot + count, dtype=np.int32)
            slot += count + int(rng.integers(0, 60))
            alive[rng.integers(0, slot + 1, int(rng.integers(0, 6)))] = False
            held = [(key, at) for key, at in held if alive[at]]
            held += list(zip(keys.tolist(), slots.tolist(), strict=True))
            room = int(rng.choice([0, 60, 400]))
            before = (run._keys, run.base, run._offsets.dtype)
            fits = run.count + count <= len(run._keys)
            if rng.integers(0, 3) == 0:
                run = run.merged(keys, slots, count, alive, room=room)
            else:  # another run's entries, as _settle and _to_full give them
                other = dedupe._Run().merged(keys, slots, count, alive)
                run = run.merged(
                    other.keys,
                    other.offsets,
                    count,
                    alive,
                    ordered=True,
                    room=room,
                    slot_base=other.base,
                )
            assert sorted(zip(run.keys.tolist(), run.slots.tolist(), strict=True)) == sorted(held)
            assert np.all(run.keys[1:] >= run.keys[:-1])
            if fits and (run.base, run._offsets.dtype) == before[1:]:
                assert run._keys is before[0]  # in place: no new arrays
                in_place += 1
    assert in_place > 100  # the in-place path was taken many times, not only the copying one


def test_the_band_key_filter_never_misses_a_key_and_rarely_passes_another() -> None:
    """The filter in front of the runs' binary searches: a key it was given always passes (or
    an item would go unfound), and of keys it was not given, full to capacity, about 4% pass."""
    rng = np.random.default_rng(3)
    given = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    bits = dedupe._Bits(len(given))
    bits.add(given)
    assert bits.may_hold(given).all()
    others = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    assert 0.02 < bits.may_hold(others).mean() < 0.07
    assert bits.words.nbytes <= len(given) * 1.01  # a byte a key


def test_compacting_the_index_keeps_every_live_item_findable_as_before(sizes: str) -> None:
    """Compaction rebuilds the band keys from the runs (the index keeps only the low halves of
    the signatures): every item left must be found exactly as before, the others not at all."""
    index = SimilarityIndex(0.5, timedelta(hours=72))
    start = datetime(2026, 11, 20, tzinfo=UTC)
    rows = [
        (
            n + 1,
            fingerprint(entry(f"i{n}", f"Report {n}", f"{OTHER} Case {n} of {n * 13} {n % 7}."))
            or b"",
            start + timedelta(hours=n // 1000 * 30),
        )
        for n in range(3000)
    ]
    for at in range(0, 3000, 25):
        index.add_many(rows[at : at + 25])
    later = start + timedelta(hours=60)
    survivors = rows[2000:]
    before = index.similar_many([fp for _, fp, _ in survivors], [later] * len(survivors))
    assert index.expire(start + timedelta(hours=103)) == 2000  # the first two thousand
    assert len(index) == 1000 and index.memory_bytes() > 0
    after = index.similar_many([fp for _, fp, _ in survivors], [later] * len(survivors))
    assert after == [[m for m in found if m.item_id > 2000] for found in before]
    assert all(
        found and found[0].item_id == item_id
        for (item_id, _, _), found in zip(survivors, after, strict=True)
    )


# -- what outputs and digests select ----------------------------------------------------------


def test_one_entry_per_story_led_by_the_lead_with_the_others_alongside(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    ap = storage.save_entries("ap", [entry("a1", "Gaza talks stall", WIRE)], processor)
    clock.advance(minutes=30)
    herald = storage.save_entries("herald", [entry("h1", "Gaza talks stall", WIRE)], processor)
    clock.advance(minutes=30)
    star = storage.save_entries("star", [entry("s1", "Gaza talks stall", WIRE)], processor)
    clock.advance(minutes=30)
    other = storage.save_entries("star", [entry("s2", "Aid trucks wait", OTHER)], processor)
    shown = storage.select_items(Selection(), limit=10)
    assert [s.item.id for s in shown] == [other.new[0], ap.new[0]]
    assert sorted(o.id for o in shown[1].also) == sorted([herald.new[0], star.new[0]])
    every = storage.select_items(Selection(every_item=True), limit=10)
    assert len(every) == 4 and all(s.also == () for s in every)
    # an output of the local papers only: the story shows through its newest selected item
    local = storage.select_items(Selection(sources=("herald", "star")), limit=10)
    assert [s.item.id for s in local] == [other.new[0], star.new[0]]
    assert ap.new[0] in {o.id for o in local[1].also}
    # topics are selected in the database, terms by the caller's test
    on_topic = storage.select_items(Selection(topics=("palestine",)), limit=10)
    assert [s.item.id for s in on_topic] == [other.new[0], ap.new[0]]  # both mention Gaza
    assert storage.select_items(Selection(topics=("climate",)), limit=10) == []
    assert storage.select_items(Selection(sections=("opinion",)), limit=10) == []
    rules = ItemFilter(Filter(exclude=("trucks",)))
    assert [s.item.id for s in storage.select_items(rules.selection, 10, rules.accepts_text)] == [
        ap.new[0]
    ]


def test_selection_pages_through_many_items_and_stops_at_the_limit(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    for n in range(130):
        clock.advance(minutes=1)
        storage.save_entries(
            "herald", [entry(f"k{n}", f"Story number {n}", f"{OTHER} Detail {n} of {n * 3}.")]
        )
    newest = storage.select_items(Selection(), limit=5)
    assert [s.item.entry.key for s in newest] == ["k129", "k128", "k127", "k126", "k125"]
    odd = storage.select_items(
        Selection(), limit=70, accept=lambda item: int(item.entry.key[1:]) % 2 == 1
    )
    assert len(odd) == 65 and odd[-1].item.entry.key == "k1"


@functools.cache
def _keys(index: SimilarityIndex, fp: bytes) -> frozenset[int]:
    sig = np.frombuffer(fp, dtype="<u4").reshape(1, -1)
    return frozenset(index._band_keys(sig).ravel().tolist())


def _reference_similar(
    index: SimilarityIndex,
    rows: dict[int, tuple[bytes, datetime]],
    fp: bytes,
    when: datetime,
    after: int,
    cap: int,
) -> list[tuple[int, float]]:
    """What the index must answer, the slow way: every live stored item sharing as many band
    keys as the index needs (keys made afresh from the full fingerprints), the newest `cap` of
    them, then the rule."""
    mine = _keys(index, fp)
    candidates = sorted(
        item_id
        for item_id, (other, _) in rows.items()
        if item_id > after and len(_keys(index, other) & mine) >= index.needed
    )[-cap:]
    found = [
        (item_id, similarity(fp, rows[item_id][0]))
        for item_id in candidates
        if abs((rows[item_id][1] - when).total_seconds()) <= index.window.total_seconds()
        and alike(fp, rows[item_id][0], index.threshold)
    ]
    return sorted(found, key=lambda pair: (-pair[1], pair[0]))


def _alike_rows(
    rng: random.Random, count: int, start: datetime
) -> dict[int, tuple[bytes, datetime]]:
    """Fingerprints of `count` texts of a small vocabulary, most of them edited copies of an
    earlier one (some headlines with a number of dead), dated over five days from `start`."""
    words = [f"w{n}" for n in range(300)]
    rows: dict[int, tuple[bytes, datetime]] = {}
    bases: list[list[str]] = []
    for n in range(1, count + 1):
        text = list(rng.choice(bases)) if bases and rng.random() < 0.6 else []
        text = text or [rng.choice(words) for _ in range(40)]
        for _ in range(rng.randint(0, 12)):
            text[rng.randrange(len(text))] = rng.choice(words)
        bases.append(text)
        title = " ".join(text[:6]) + (f" {rng.randint(1, 4)} dead" if rng.random() < 0.3 else "")
        rows[n] = (
            fingerprint(entry(f"i{n}", title, " ".join(text))) or b"",
            start + timedelta(hours=rng.randint(0, 120)),
        )
    return rows


def test_with_8_bits_confirming_the_answers_gives_the_slow_way_exactly(sizes: str) -> None:
    """With 8 bits of each MinHash value (as storage keeps it), what the index answers is a
    superset of the slow way's, scored high by chance agreements; confirmed against the full
    fingerprints (as storage does), it is the slow way's answer exactly, scores included. And
    each item costs 128 bytes less than with 16 bits."""
    start = datetime(2026, 11, 20, tzinfo=UTC)
    rows = _alike_rows(random.Random(5), 1100, start)
    stored = list(rows.items())[:1000]
    narrow = SimilarityIndex(0.5, timedelta(hours=48), bits=8)
    wide = SimilarityIndex(0.5, timedelta(hours=48))
    for at in range(0, 1000, 40):
        batch = [(item_id, fp, when) for item_id, (fp, when) in stored[at : at + 40]]
        narrow.add_many(batch)
        wide.add_many(batch)
    assert wide.memory_bytes() - narrow.memory_bytes() == 128 * 1000
    queries = list(rows.values())[1000:]
    answers = narrow.similar_many([fp for fp, _ in queries], [when for _, when in queries])
    confirmed = [
        narrow.confirm(fp, [(m.item_id, rows[m.item_id][0]) for m in found])
        for (fp, _), found in zip(queries, answers, strict=True)
    ]
    expected = [
        _reference_similar(narrow, dict(stored), fp, when, 0, 5_000) for fp, when in queries
    ]
    assert [[(m.item_id, m.score) for m in found] for found in confirmed] == expected
    assert sum(map(len, expected)) > 10
    inflated = [(m.item_id, m.score) for found in answers for m in found] != [
        pair for found in expected for pair in found
    ]
    assert inflated  # what confirming is for: the 8-bit answers alone were not exact
    with pytest.raises(ValueError, match="8 or 16"):
        SimilarityIndex(0.5, timedelta(hours=48), bits=4)


@pytest.mark.parametrize("cap", [5_000, 3])
def test_a_batch_query_answers_as_each_item_asked_alone_the_slow_way(
    cap: int, sizes: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index scores a whole batch's candidate pairs at once; every answer must be the one
    a plain search over all stored items gives, including the cap on candidates per query,
    the window, removed items, `after`, and headline numbers that conflict."""
    monkeypatch.setattr(dedupe, "_MAX_CANDIDATES", cap)
    start = datetime(2026, 11, 20, tzinfo=UTC)
    index = SimilarityIndex(0.5, timedelta(hours=48))
    rows = _alike_rows(random.Random(7), 1200, start)
    stored = list(rows.items())[:1000]
    for at in range(0, 1000, 40):
        index.add_many([(item_id, fp, when) for item_id, (fp, when) in stored[at : at + 40]])
    index.remove([3, 50, 700])
    live = {item_id: row for item_id, row in stored if item_id not in (3, 50, 700)}
    queries = list(rows.values())[1000:]
    for after in (0, 600):
        fps, whens = [fp for fp, _ in queries], [when for _, when in queries]
        answers = index.similar_many(fps, whens, after)
        expected = [_reference_similar(index, live, fp, when, after, cap) for fp, when in queries]
        assert [[(m.item_id, m.score) for m in found] for found in answers] == expected
        assert sum(map(len, expected)) > 10
        if cap < 5_000:  # the cap leaves out some that a search without it finds
            assert expected != [
                _reference_similar(index, live, fp, when, after, 5_000) for fp, when in queries
            ]


def test_full_runs_hold_their_items_in_the_order_added_in_16_bit_offsets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Groups of more than RECENT items and smaller ones alternate, as polls stored together do:
    each full run then holds a stretch of slots of its own (its offsets span no more than its
    items), so its offsets keep to 16 bits. Groups went straight to the last full run while small
    batches went through the young one, interleaving their slots: at 10,000 sources every full
    run widened to 32 bits, each widening holding the old arrays and the new at once (20 MiB)."""
    monkeypatch.setattr(SimilarityIndex, "RECENT", 16)
    monkeypatch.setattr(SimilarityIndex, "YOUNG", 128)
    monkeypatch.setattr(SimilarityIndex, "OLD", 1024)
    monkeypatch.setattr(dedupe, "_OFFSET_SPAN", 1100)  # what 65,536 is to OLD in the service
    start = datetime(2026, 11, 20, tzinfo=UTC)
    index = SimilarityIndex(0.5, timedelta(hours=48), bits=8)
    rng = random.Random(16)
    rows = list(_alike_rows(rng, 6000, start).items())
    at = 0
    while at < len(rows):
        size = rng.choice([2, 5, 10] * 4 + [30, 60])  # now and then a group over RECENT
        index.add_many([(item_id, fp, when) for item_id, (fp, when) in rows[at : at + size]])
        at += size
    full = index._runs[2:]
    assert len(full) >= 4 and sum(run.items for run in index._runs) == len(index) == 6000
    for run in full:
        slots = run.slots
        assert run._offsets.dtype == np.uint16
        # a stretch of its own, but for the few items the recent run held back meanwhile
        assert int(slots.max()) - int(slots.min()) + 1 <= run.items + 4 * SimilarityIndex.RECENT
    assert sorted(int(run.slots.min()) for run in full) == [int(r.slots.min()) for r in full]


@pytest.mark.parametrize("ordered", [True, False])
def test_the_index_answers_the_slow_way_after_removals_compaction_and_ids_out_of_order(
    ordered: bool, sizes: str
) -> None:
    """Items added in batches of every size (one, a poll's, more than RECENT), by ids that
    ascend or not (a lookup by id is a binary search only while they do), some removed, most
    expired and the rest compacted, then more added: every answer stays the slow way's, and
    an item added twice is held once."""
    start = datetime(2026, 11, 20, tzinfo=UTC)
    index = SimilarityIndex(0.5, timedelta(hours=48))
    rng = random.Random(11)
    rows = _alike_rows(rng, 1900, start)
    stored = list(rows.items())[:1400]
    batches = []
    at = 0
    while at < len(stored):
        size = rng.choice([1, 5, 25, 60, 300])
        batches.append(stored[at : at + size])
        at += size
    if not ordered:
        rng.shuffle(batches)
    for batch in batches:
        index.add_many([(item_id, fp, when) for item_id, (fp, when) in batch])
    assert len(index) == 1400
    index.add_many([(item_id, fp, when) for item_id, (fp, when) in stored[100:140]])
    assert len(index) == 1400  # already held
    # what bounds a merge's copy (and so the peak): no run holds more than OLD items
    assert max(run.items for run in index._runs) <= SimilarityIndex.OLD
    index.remove([1650, 9999])  # never added: nothing happens
    assert len(index) == 1400
    removed = set(rng.sample(sorted(rows)[:1400], 40))
    index.remove(sorted(removed))
    now = start + timedelta(hours=48 + 95)
    expired = index.expire(now)  # over 1,024 and half the slots dead: compacted
    live = {
        item_id: (fp, when)
        for item_id, (fp, when) in stored
        if item_id not in removed and when >= now - timedelta(hours=48)
    }
    assert expired > 1024 - 40 and len(index) == len(live)
    assert sum(run.items for run in index._runs) == len(index)  # compacted: each item once
    index.remove(sorted(removed)[:5])  # gone already, between ids still held
    assert len(index) == len(live)
    queries = list(rows.values())[1400:1550]

    def check() -> None:
        when = start + timedelta(hours=110)
        fps = [fp for fp, _ in queries]
        answers = index.similar_many(fps, [when] * len(fps))
        expected = [_reference_similar(index, live, fp, when, 0, 5_000) for fp in fps]
        assert [[(m.item_id, m.score) for m in found] for found in answers] == expected
        assert sum(map(len, expected)) > 10

    check()
    later = list(rows.items())[1550:1700]
    for item_id, (fp, when) in later:  # one at a time after the compaction (none expired:
        index.add(item_id, fp, when)  # that waits for the next call of expire)
        live[item_id] = (fp, when)
    check()
    lowest = sorted(live)[:10]  # the first slots die, then merges must keep every other item
    index.remove(lowest)
    for item_id in lowest:
        del live[item_id]
    for item_id, (fp, when) in list(rows.items())[1700:]:
        index.add(item_id, fp, when)
        live[item_id] = (fp, when)
    check()


def test_a_save_enters_its_items_in_the_index_before_the_next_writer_starts(
    storage: Storage, processor: Processor
) -> None:
    """New items enter the story index once committed and before this process's next writer
    may start (on SQLite, writers queue on one lock): the next save then finds nothing to read
    back from storage first. Entered after the lock, every other save of a busy poll read the
    previous one's items back."""
    index = processor.index
    assert index is not None
    held: list[bool] = []
    adding = index.add_many

    def add_many(rows: Any) -> None:
        held.append(storage._write_lock.locked())
        adding(rows)

    index.add_many = add_many  # type: ignore[method-assign]
    text = "Officials in Gaza said talks on aid resume on Monday after a pause of a week."
    saved = storage.save_entries("ap", [entry("a1", "Talks resume", text)], processor)
    assert held == ([True] if storage.backend == "sqlite" else [False])
    assert len(index) == 1 and index.watermark == saved.new[0]
    now = storage.clock()
    record = FetchRecord("herald", fetched_at=now, next_due_at=now, status=200)
    storage.record_fetch(record, [entry("h1", "Aid talks", text)], filer=processor)
    assert len(held) == 2 and held[1] == (storage.backend == "sqlite") and len(index) == 2


def test_a_batch_looked_up_compared_and_added_is_keyed_once() -> None:
    """Storage looks a new batch up, compares it within itself and adds it: its band keys are
    made once for the three, and a different batch gets its own."""
    index = SimilarityIndex(0.5, timedelta(days=2))
    when = datetime(2026, 11, 30, tzinfo=UTC)
    texts = [
        f"Officials said talks on aid to Gaza resume on day {n} after a pause" for n in "abcdef"
    ]
    fps = [fingerprint(entry(f"k{n}", text, text)) or b"" for n, text in enumerate(texts)]
    made: list[int] = []
    keys_of = index._band_keys

    def counted(sigs: Any) -> Any:
        made.append(len(sigs))
        return keys_of(sigs)

    index._band_keys = counted  # type: ignore[method-assign]
    assert index.similar_many(fps, [when] * 6) == [[] for _ in fps]
    within = index.similar_within(fps, [when] * 6)
    index.add_many((n + 1, fp, when) for n, fp in enumerate(fps))
    assert made == [6]
    assert within[1] and within[1][0][0] == 0  # alike the first of the batch
    again = index.similar_many(fps[:2], [when] * 2)
    assert made == [6, 2] and [m.item_id for m in again[0]][:1] == [1]


def _group_of_polls(
    storage: Storage, clock: Clock, polls: dict[str, tuple[list[Entry], str, object]]
) -> tuple[dict[str, object], int]:
    """Each poll's record_fetch in its own thread, all waiting while another group is written,
    so they go in one group: what each call gave, and how many commits it took."""
    storage.claim_sources(sorted(polls), "w1", timedelta(minutes=5))
    later = clock() + timedelta(hours=1)
    commits: list[int] = []
    event.listen(storage._engine, "commit", lambda _conn: commits.append(1))
    results: dict[str, object] = {}

    def poll(sid: str) -> None:
        entries, owner, filer = polls[sid]
        record = FetchRecord(sid, clock(), later, status=200)
        try:
            results[sid] = storage.record_fetch(record, entries, owner, filer)  # type: ignore[arg-type]
        except BaseException as exc:
            results[sid] = exc

    threads = [threading.Thread(target=poll, args=(sid,)) for sid in polls]
    with storage._saves_ready:  # as if another group were being written
        storage._save_writing = True
    for thread in threads:
        thread.start()
    for _ in range(500):
        if len(storage._saves) == len(polls):
            break
        threading.Event().wait(0.01)
    assert len(storage._saves) == len(polls)
    with storage._saves_ready:  # written: the first woken writes the group
        storage._save_writing = False
        storage._saves_ready.notify_all()
    for thread in threads:
        thread.join()
    return results, len(commits)


def _wire_polls(processor: object) -> dict[str, tuple[list[Entry], str, object]]:
    """Four polls: a wire story, an unrelated one, a copy of the wire story, and one whose lease
    is another worker's."""
    copy = WIRE.replace("CAIRO (AP) — ", "").replace("stabilization", "stabilisation")
    return {
        "ap": ([entry("a1", "Gaza talks stall, officials say", WIRE)], "w1", processor),
        "herald": ([entry("h1", "Aid trucks wait", OTHER)], "w1", processor),
        "star": ([entry("s1", "Gaza ceasefire talks hit snag", copy + " More.")], "w1", processor),
        "bbc": ([entry("b1", "Lost", "A lease lost before the write.")], "w2", processor),
    }


def test_polls_stored_together_link_their_stories_and_a_lost_lease_spoils_only_its_own(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    """Polls with entries waiting for the write turn go in one transaction; a wire copy in one
    of them joins the story of the other's item (compared within the group, as it would have
    been with the stored item), and a lost lease among them stores nothing of its own."""
    polls = _wire_polls(processor)
    results, commits = _group_of_polls(storage, clock, polls)
    assert commits == 1
    assert results.pop("bbc") is None
    reports = {sid: result for sid, result in results.items() if isinstance(result, SaveReport)}
    assert sorted(reports) == ["ap", "herald", "star"]
    assert [reports[sid].merged for sid in ("ap", "herald", "star")] == [0, 0, 1]
    ap, herald, star = (reports[sid].new[0] for sid in ("ap", "herald", "star"))
    assert story_of(storage, star) == story_of(storage, ap) != story_of(storage, herald)
    assert storage.count_items() == 3  # nothing of the lost lease's
    details = storage.item_details(star)
    assert details is not None and [m.item.id for m in details.members if m.lead] == [ap]
    # and the index holds what was committed: a later copy finds the story
    clock.advance(minutes=10)
    later = storage.save_entries("herald", [entry("h2", "Gaza talks stall", WIRE)], processor)
    assert story_of(storage, later.new[0]) == story_of(storage, ap)


class _Failing:
    """A filer that raises for one source's entries (a bug in filing, say)."""

    def __init__(
        self, processor: Processor, failing: str, error: BaseException | None = None
    ) -> None:
        self._processor = processor
        self._failing = failing
        self._error = error or RuntimeError(f"filing {failing} failed")
        self.index = processor.index

    def file(self, source_id: str, entry: Entry) -> Filing:
        return self.file_all(source_id, [entry])[0]

    def file_all(self, source_id: str, entries: Sequence[Entry]) -> list[Filing]:
        if source_id == self._failing:
            raise self._error
        return self._processor.file_all(source_id, entries)


def _three_polls(filer: object) -> dict[str, tuple[list[Entry], str, object]]:
    return {
        sid: ([entry(f"{sid}1", f"Story of {sid}", f"What {sid} says, at some length.")], "w1",
              filer)
        for sid in ("ap", "herald", "star")
    }  # fmt: skip


def test_a_poll_that_fails_in_a_group_fails_alone(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    """A group whose write fails is written again a poll at a time: the failing poll's caller
    gets its own error, and the others are stored."""
    filer = _Failing(processor, "herald")
    results, commits = _group_of_polls(storage, clock, _three_polls(filer))
    failure = results.pop("herald")
    assert isinstance(failure, RuntimeError) and "filing herald failed" in str(failure)
    assert all(isinstance(result, SaveReport) and result.new for result in results.values())
    assert commits == 2  # the group's failed, then each poll alone: two stored, one failed
    assert storage.count_items() == 2
    state = storage.source("herald")
    assert state is not None and state.lease_owner == "w1"  # still held: the poll reports it


def _saved_at_once(
    storage: Storage, clock: Clock, polls: dict[str, tuple[list[Entry], str, object]]
) -> tuple[dict[str, object], int]:
    """The polls handed to `save_fetches` in one call, as the poller's storing thread hands
    them: what each gave, and how many commits it took."""
    storage.claim_sources(sorted(polls), "w1", timedelta(minutes=5))
    later = clock() + timedelta(hours=1)
    commits: list[int] = []
    event.listen(storage._engine, "commit", lambda _conn: commits.append(1))
    fetches = [
        (FetchRecord(sid, clock(), later, status=200), entries, owner, filer)
        for sid, (entries, owner, filer) in polls.items()
    ]
    outcomes = storage.save_fetches(fetches)  # type: ignore[arg-type]
    return dict(zip(polls, outcomes, strict=True)), len(commits)


def test_documents_handed_on_together_are_one_group_and_keep_their_own_outcomes(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    """The poller's loop hands several documents to storage at once: those with entries go in
    one transaction, compared with each other as polls stored together are; a lost lease stores
    nothing of its own; a document with no entries is recorded as an outcome of its own."""
    polls = {**_wire_polls(processor), "quiet": ([], "w1", processor)}
    quiet = Source("quiet", "https://quiet.example/feed", "world")
    storage.sync_sources([*processor.config.sources, quiet])
    results, commits = _saved_at_once(storage, clock, polls)
    assert commits == 2  # the group, and the document without entries
    assert results.pop("bbc") is None
    assert results.pop("quiet") == SaveReport()
    assert all(isinstance(result, SaveReport) for result in results.values())
    reports = {sid: result for sid, result in results.items() if isinstance(result, SaveReport)}
    assert [reports[sid].merged for sid in ("ap", "herald", "star")] == [0, 0, 1]
    ap, herald, star = (reports[sid].new[0] for sid in ("ap", "herald", "star"))
    assert story_of(storage, star) == story_of(storage, ap) != story_of(storage, herald)
    assert storage.count_items() == 3
    states = {state.id: state for state in storage.sources()}
    assert states["quiet"].lease_owner is None and states["quiet"].last_status == 200
    assert states["bbc"].lease_owner == "w1"  # not w2's to release


def test_a_document_that_fails_among_those_handed_on_fails_alone(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    """Handed on together, a document whose write fails gets its own error back (the loop turns
    it into the source's failure) and the others are stored."""
    results, commits = _saved_at_once(storage, clock, _three_polls(_Failing(processor, "herald")))
    failure = results.pop("herald")
    assert isinstance(failure, RuntimeError) and "filing herald failed" in str(failure)
    assert all(isinstance(result, SaveReport) and result.new for result in results.values())
    assert commits == 2  # the group's failed, then each alone: two stored, one failed
    assert storage.count_items() == 2


@pytest.mark.postgres
def test_a_group_of_saves_and_retention_never_wait_on_each_other_in_a_cycle(
    postgres_url: str, clock: Clock
) -> None:
    """A group of saves locks its sources' rows, then the story lock; retention takes the story
    lock, then writes pruned_keys, whose foreign key checks the source's row. The group's lock on
    the rows must not block that check (FOR NO KEY UPDATE, not FOR UPDATE), or the two deadlock
    on PostgreSQL (one process is enough: prune and poll use their own connections)."""
    import time

    from aggregator.storage import sources, stories, tables

    _reset_postgres(postgres_url)
    storage = Storage.open(postgres_url, clock=clock)
    try:
        storage.sync_sources([Source("a", "https://a.example/feed", "world")])
        storage.claim_sources(["a"], "w1", timedelta(minutes=5))
        record = FetchRecord("a", clock(), clock() + timedelta(hours=1), status=200)
        rows_locked, story_locked = threading.Event(), threading.Event()
        errors: list[str] = []

        def group() -> None:  # as _write_group: the sources' rows, then the story lock
            try:
                with storage._saving() as (conn, _):
                    assert sources.record_fetches(conn, [(record, "w1")]) == [True]
                    rows_locked.set()
                    story_locked.wait(5)
                    time.sleep(0.3)  # retention's insert is waiting on the row by now
                    stories.lock(conn)
            except Exception as exc:
                errors.append(f"group: {exc}")

        def prune() -> None:  # as prune_items: the story lock, then pruned_keys
            try:
                with storage._tx() as conn:
                    rows_locked.wait(5)
                    stories.lock(conn)
                    story_locked.set()
                    conn.execute(
                        tables.pruned_keys.insert().values(
                            source_id="a", key="k", pruned_at=clock()
                        )
                    )
            except Exception as exc:
                errors.append(f"prune: {exc}")

        threads = [threading.Thread(target=group), threading.Thread(target=prune)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
    finally:
        storage.close()


def test_a_copy_in_a_group_joins_the_most_alike_of_the_stored_and_the_groups_items(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    """A near-copy of another source's item in its group joins that item's story when it is more
    alike than any stored item, as it would had the two polls been stored one after the other
    (the group's item then stored first)."""
    rng = random.Random(3)
    words = [f"w{rng.randrange(10**6)}" for _ in range(60)]
    shared, own_x, own_s = words[:36], words[36:48], words[48:]
    edited = list(shared)
    for at in (6, 18, 30):
        edited[at] = f"v{rng.randrange(10**6)}"
    x_text, s_text, a_text = (" ".join(w) for w in (shared + own_x, shared + own_s, edited + own_x))
    prints = {k: fingerprint(entry(k, "Headline", t)) or b"" for k, t in (("x", x_text),
              ("s", s_text), ("a", a_text))}  # fmt: skip
    assert similarity(prints["x"], prints["a"]) > similarity(prints["x"], prints["s"]) >= 0.5
    assert similarity(prints["a"], prints["s"]) < 0.5
    older = storage.save_entries("bbc", [entry("s", "Headline", s_text)], processor)
    clock.advance(minutes=30)
    results, _ = _group_of_polls(
        storage,
        clock,
        {
            "herald": ([entry("a", "Headline", a_text)], "w1", processor),
            "star": ([entry("x", "Headline", x_text)], "w1", processor),
        },
    )
    a, x = (result.new[0] for result in results.values() if isinstance(result, SaveReport))
    assert story_of(storage, x) == story_of(storage, a) != story_of(storage, older.new[0])


def test_a_group_interrupted_reports_each_poll_as_not_stored(
    storage: Storage, processor: Processor, clock: Clock
) -> None:
    """A group cut short (a KeyboardInterrupt in the thread writing it) stores nothing, and
    each poll's caller is told so, never that its lease was lost."""
    filer = _Failing(processor, "herald", KeyboardInterrupt())
    results, _ = _group_of_polls(storage, clock, _three_polls(filer))
    assert storage.count_items() == 0
    assert sum(isinstance(result, KeyboardInterrupt) for result in results.values()) == 1
    others = [result for result in results.values() if not isinstance(result, KeyboardInterrupt)]
    assert len(others) == 2
    assert all(isinstance(r, StorageError) and "interrupted" in str(r) for r in others)


@pytest.mark.postgres
def test_two_workers_groups_never_deadlock_on_a_stored_item(
    postgres_url: str, clock: Clock
) -> None:
    """Worker 2 stores a group: a feed served again unchanged (its stored item is touched) and a
    feed with a new item. Meanwhile worker 1 stores an item with the stored item's link, which
    makes that item lead a story. The group takes the story lock before touching any item (as a
    poll stored alone does), so worker 1 waits for it rather than each waiting for the other."""
    _reset_postgres(postgres_url)
    first, second = Processor(config()), Processor(config())
    storage = Storage.open(postgres_url, clock=clock)
    other = Storage.open(postgres_url, clock=clock)
    storage.sync_sources(first.config.sources)
    try:
        stored = entry("x", "Council approves budget", "The council approved the budget today.")
        storage.save_entries("ap", [stored], second)
        filing, go = threading.Event(), threading.Event()

        class Slow(_Failing):  # files the new item only once worker 1 is under way
            def file_all(self, source_id: str, entries: Sequence[Entry]) -> list[Filing]:
                if source_id == "herald" and entries:
                    filing.set()
                    go.wait(10)
                return self._processor.file_all(source_id, entries)

        new = entry("b", "Storm hits the coast", "Heavy rain and wind battered the coast.")
        copy = entry("c", "Budget passes", "Other words about a vote.", link=stored.link)
        other.claim_sources(["star"], "w9", timedelta(minutes=5))
        results: dict[str, object] = {}

        def poll(store: Storage, sid: str, entries: list[Entry], owner: str, filer: object) -> None:
            record = FetchRecord(sid, clock(), clock() + timedelta(hours=1), status=200)
            try:
                results[sid] = store.record_fetch(record, entries, owner, filer)  # type: ignore[arg-type]
            except Exception as exc:
                results[sid] = exc

        group = threading.Thread(
            target=_group_of_polls,
            args=(storage, clock, {"ap": ([stored], "w1", second),
                                   "herald": ([new], "w1", Slow(second, ""))}),
        )  # fmt: skip
        group.start()
        assert filing.wait(10)
        alone = threading.Thread(target=poll, args=(other, "star", [copy], "w9", first))
        alone.start()
        threading.Event().wait(0.5)  # worker 1 is waiting for a lock by now
        go.set()
        group.join(20)
        alone.join(20)
        report = results["star"]
        assert isinstance(report, SaveReport), report
        assert report.merged == 1
        assert story_of(storage, report.new[0]) == story_of(storage, 1)
    finally:
        other.close()
        storage.close()
