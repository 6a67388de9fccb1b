"""The same story in other words: MinHash fingerprints of an item's text (fingerprint.py makes
them) and an index to find items whose text is alike (Jaccard similarity of word pairs), within a
time window.

The MinHash signatures are datasketch's affine32 scheme (4 bytes a permutation, stable across
processes and versions since 2.0), computed here in one numpy expression with the same
permutations (numpy's legacy RandomState, seed 1, which numpy keeps stable): stored fingerprints
stay valid, and datasketch (which pulls in scipy, a second of start-up) is only a test's
reference now. Its LSH index kept a Python dict entry per band and item, which measured about
8.6 KB an item (1.7 GB for 200,000 items), so the bands are kept here instead, in numpy: a few
sorted runs of band keys with the slot of each item (`SimilarityIndex`). A query costs a few
binary searches however many items the window holds; candidates are then checked against the
signatures.
"""

from __future__ import annotations

import itertools
import mmap
import operator
import threading
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator import speedups
from aggregator.process import minhash_table
from aggregator.process.fingerprint import FP_WORDS, NUM_PERM, NUMBERS
from aggregator.types import Match

SEED = 1


def permutations(num_perm: int = NUM_PERM, seed: int = SEED) -> tuple[NDArray[np.uint32], ...]:
    """datasketch's affine32 permutations h -> a*h + b mod 2**32 (a odd), drawn the same way.
    Every process uses the copy in `minhash_table` (numpy.random costs 6 MiB of memory and
    30 ms to import); this draws them afresh, to write and to test that copy."""
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def render_table() -> str:
    """The source of `minhash_table`."""
    a, b = permutations()
    lines = [
        '"""Written by `python3 -m aggregator.process.dedupe`; do not edit."""',
        "",
        "# fmt: off",
    ]
    for name, values in (("A", a), ("B", b)):
        lines.append(f"{name} = (")
        numbers = [str(v) for v in values.tolist()]
        for at in range(0, len(numbers), 8):
            lines.append("    " + ", ".join(numbers[at : at + 8]) + ",")
        lines.append(")")
    return "\n".join([*lines, "# fmt: on"]) + "\n"


# Shingles are hashed here (crc32: stable across processes, unlike hash()).
_A = np.array(minhash_table.A, dtype=np.uint32)
_B = np.array(minhash_table.B, dtype=np.uint32)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_EXPIRE_EVERY = timedelta(minutes=1)
_MAX_CANDIDATES = 5_000  # a key shared by more items than this is boilerplate, not a story
WITHIN_HEAD = 8  # in a batch, an item is compared with the first items of its band buckets
WITHIN_TAIL = 8  # and with the latest before it (the nearest in time: a batch goes by date)
_PAIR_BLOCK = 65_536  # candidate pairs scored at once (2 x 528 bytes each)
_BITS_BLOCK = 1 << 17  # keys added to the filter at once
_MERGE_BLOCK = 1 << 14  # entries of a run moved at once in a merge (temporaries: 40 bytes each)


def minhash_values(hashes: Iterable[int]) -> NDArray[np.uint32]:
    """datasketch's affine32 MinHash of already hashed shingles, with its permutations, in one
    numpy expression: the same values as `MinHash.update_batch` (a test holds them equal)
    without its per-call overhead, which was a tenth of the cost of filing an item."""
    signatures = _minhash_runs([hashes if isinstance(hashes, Collection) else list(hashes)])
    return np.asarray(signatures[0], dtype=np.uint32)


def _minhash_runs(runs: Sequence[Collection[int]]) -> NDArray[np.uint32]:
    """One MinHash signature per run of shingle hashes (none empty), a row each."""
    sizes = [len(run) for run in runs]
    values = np.fromiter(itertools.chain.from_iterable(runs), np.uint32, sum(sizes))
    with np.errstate(over="ignore"):
        values ^= values >> np.uint32(16)
        values *= np.uint32(0x85EBCA6B)
        values ^= values >> np.uint32(13)
        values *= np.uint32(0xC2B2AE35)
        values ^= values >> np.uint32(16)  # the MurmurHash3 finaliser datasketch premixes with
        starts = np.cumsum([0, *sizes[:-1]])
        # a permutation a row, the shingles along it: each minimum is taken over contiguous
        # memory (a shingle a row, the minima strided down the columns, took 4.6 times longer)
        permuted = np.multiply.outer(_A, values)
        permuted += _B[:, None]
        return np.asarray(np.minimum.reduceat(permuted, starts, axis=1).T, dtype=np.uint32)


def _words_of(fp: bytes) -> NDArray[np.uint32]:
    return np.frombuffer(fp, dtype="<u4")


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard similarity of two items' word pairs."""
    return _compared(a, b)[0]


def _compared(a: bytes, b: bytes) -> tuple[float, bool]:
    """Two fingerprints' similarity, and whether their headline numbers conflict (both have
    some, and they share none): in C where it was built (numpy's calls cost 25 us a pair)."""
    if speedups.native is not None:
        equal, conflict = speedups.native.compare(a, b, NUM_PERM, NUMBERS)
        return equal / NUM_PERM, conflict
    score = float(np.count_nonzero(_words_of(a)[:NUM_PERM] == _words_of(b)[:NUM_PERM])) / NUM_PERM
    numbers = _words_of(a)[NUM_PERM:].reshape(1, NUMBERS)
    return score, bool(_conflicts(numbers, _words_of(b)[NUM_PERM:])[0])


def _conflicts(numbers: NDArray[np.uint32], mine: NDArray[np.uint32]) -> NDArray[np.bool_]:
    """Rows of `numbers` whose headline numbers share none with `mine`, both having some."""
    if not mine.any():
        return np.zeros(len(numbers), dtype=bool)
    wanted = mine[mine != 0]
    shared = np.isin(numbers, wanted).any(axis=1)
    return np.asarray(numbers.any(axis=1) & ~shared, dtype=bool)


def _pair_conflicts(mine: NDArray[np.uint32], theirs: NDArray[np.uint32]) -> NDArray[np.bool_]:
    """Row by row, `_conflicts`: both rows have headline numbers and share none."""
    shared = ((mine[:, :, None] == theirs[:, None, :]) & (mine[:, :, None] != 0)).any(axis=(1, 2))
    return np.asarray(mine.any(axis=1) & theirs.any(axis=1) & ~shared, dtype=bool)


def alike(a: bytes, b: bytes, threshold: float) -> bool:
    """The rule the index applies, for two fingerprints."""
    score, conflict = _compared(a, b)
    return score >= threshold and not conflict


def lsh_shape(threshold: float) -> tuple[int, int]:
    """Bands and rows per band: the fewest candidates that still find 97% of the pairs
    exactly at the threshold (pairs above it are found more surely still)."""
    for rows in range(8, 0, -1):
        bands = NUM_PERM // rows
        if 1 - (1 - threshold**rows) ** bands >= 0.97:
            return bands, rows
    return NUM_PERM, 1


def bands_needed(threshold: float, bands: int, rows: int) -> int:
    """How many bands a pair must share to be compared: two where that still finds 97% of the
    pairs at the threshold, else one. Unrelated items share a band now and then, two hardly
    ever: on generated news of a small vocabulary the candidates of a 25-item document grew with
    the window (12,700 at 150,000 items, a tenth of a 10,000-source poll's time), while a pair
    at the threshold (0.5: 42 bands of 3) shares about five bands."""
    p = threshold**rows  # the chance that a pair at the threshold shares a given band
    none, one = (1 - p) ** bands, bands * p * (1 - p) ** (bands - 1)
    return 2 if 1 - none - one >= 0.97 else 1


def _distinct(values: NDArray[Any]) -> NDArray[Any]:
    """The distinct values, sorted: np.unique's first call imports numpy.ma (1.2 MiB)."""
    values = np.sort(values)
    return values[np.append(True, values[1:] != values[:-1])] if len(values) else values


def _shared(codes: NDArray[np.int64], needed: int) -> NDArray[np.int64]:
    """The distinct pair codes that occur at least `needed` times (once per band shared), sorted.
    A sort, then neighbours: np.unique's hashing was ten times slower on millions of pairs."""
    if not len(codes):
        return codes
    codes = np.sort(codes)
    starts = np.ones(len(codes), dtype=bool)
    starts[1:] = codes[1:] != codes[:-1]
    first = np.nonzero(starts)[0]
    if needed > 1:
        counts = np.diff(np.append(first, len(codes)))
        first = first[counts >= needed]
    return codes[first]


class _Run:
    """Band keys in sorted order, with the slot of the item each came from: as offsets from the
    lowest slot, in 16 bits where they span less than 65,536 (a run's items are added in order
    of slot, and a full run holds at most OLD of them), which saves an eighth of an item's bytes.

    The first `count` entries of its two arrays are the run; the rest is room to merge into, in
    place (`merged`), so the arrays are not made anew at each merge. What is not yet written
    costs address space, not memory (`_room`)."""

    def __init__(self) -> None:
        """An empty run: `merged` gives it entries (and arrays)."""
        self._keys: NDArray[np.uint32] = _EMPTY_KEYS
        self._offsets: NDArray[Any] = _EMPTY_OFFSETS
        self._fences: NDArray[np.uint32] | None = None  # see `held`
        self.base = self.count = self.items = 0
        # the index's count of the dead when every entry here was last known alive (-1: not
        # known): a merge looks for dead entries to drop only when some died since
        self.clean_at = -1

    @property
    def keys(self) -> NDArray[np.uint32]:
        return self._keys[: self.count]

    @property
    def offsets(self) -> NDArray[Any]:
        return self._offsets[: self.count]

    @property
    def slots(self) -> NDArray[np.int32]:
        return self.offsets.astype(np.int32) + np.int32(self.base)

    def held(self) -> tuple[NDArray[np.uint32], NDArray[Any], int, int, Any, int]:
        """The run as the C lookup reads it: its arrays, count and base, and its fences (every
        FENCE_STEP-th key, made when first needed after a merge; None for a small run, which
        stays in the cache): a search goes through the fences, then one block of the run."""
        fences = self._fences
        if fences is None and self.count >= _FENCED_FROM:
            fences = self._fences = self._keys[: self.count : _FENCE_STEP].copy()
        return self._keys, self._offsets, self.count, self.base, fences, _FENCE_STEP

    def _alive(self, alive: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Whether each entry's item is alive, with no array of absolute slots made."""
        return np.asarray(alive[self.base :][self.offsets], dtype=bool)

    def lookup(self, query: NDArray[np.uint32]) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """Every (position in `query`, slot) pair whose key is filed here, as two arrays."""
        keys = self.keys
        if not len(keys) or not len(query):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        left = np.searchsorted(keys, query)
        inside = np.nonzero(left < len(keys))[0]
        hit = inside[keys[left[inside]] == query[inside]]
        starts = left[hit]
        counts = np.searchsorted(keys, query[hit], "right") - starts
        ends = np.cumsum(counts)
        total = int(ends[-1]) if len(ends) else 0
        places = np.arange(total) + np.repeat(starts - ends + counts, counts)
        found = self.offsets[places].astype(np.int32) + np.int32(self.base)
        return np.repeat(hit, counts).astype(np.int64), found

    def merged(
        self,
        keys: NDArray[np.uint32],
        slots: NDArray[Any],
        items: int,
        alive: NDArray[np.bool_],
        *,
        ordered: bool = False,
        room: int = 0,
        slot_base: int = 0,
        dead: int | None = None,
        given_alive: bool = True,
        bounds: tuple[int, int] | None = None,
    ) -> _Run:
        """This run with its dead entries gone and the given ones added (`ordered`: the keys
        come sorted, from another run); returned, for the caller to keep. The merge is done in
        place where the arrays have room (else into new ones with room for `room` entries, the
        live entries copied over), a block at a time: each entry moves once, from the last, to
        where it belongs, then the new ones go into the places left between. Making the merged
        arrays anew at each merge held the old and the new at once, plus 9 bytes an entry of
        temporaries: a first pass of 1,000 sources peaked 7 MiB above its end at the last one.
        `slot_base` is added to each of `slots` (another run's offsets, given as they are).
        `dead`: the index's count of the dead now; where it is the run's `clean_at`, no entry
        died since the last merge, and none is looked for (a look at every entry, each merge:
        a fifth of adding a poll's items to the index). `given_alive`: whether the given
        entries' items are all alive (new items are; another run's, when it was clean).
        `bounds`: the lowest and highest of `slots` (plus `slot_base`), where the caller knows
        them."""
        self._fences = None
        native = speedups.native
        if native is not None and slots.dtype not in (np.uint16, np.int32):
            slots = slots.astype(np.int32)  # what the C sort and merge take
        if not ordered and native is not None:  # the same order, by a radix sort in C
            sorted_keys, sorted_slots = native.sort_pairs(_flat(keys), _flat(slots))
            keys = np.frombuffer(sorted_keys, dtype=np.uint32)
            slots = np.frombuffer(sorted_slots, dtype=slots.dtype)
        elif not ordered:
            order = np.argsort(keys, kind="stable")
            keys, slots = keys[order], slots[order]
            del order
        base, dtype = self._shape(slots, slot_base, bounds)
        fits = self.count + len(keys) <= len(self._keys)
        if base != self.base or dtype != self._offsets.dtype or not fits:
            self._move(alive, base, dtype, len(keys), room)
        elif dead is None or self.clean_at != dead:
            self._drop_dead(alive)
        self.clean_at = dead if dead is not None and given_alive else -1
        count, added = self.count, len(keys)
        if native is not None:  # the same merge in C, from the last entry, no temporaries
            shift = slot_base - base
            native.merge(self._keys, self._offsets, count, _flat(keys), _flat(slots), shift)
            self.count = count + added
            self.items += items
            return self
        wide = count + added >= 1 << 31
        # where each new one goes among the old ones (before equal keys)
        among: NDArray[np.signedinteger[Any]] = np.empty(added, np.int64 if wide else np.int32)
        for at in range(0, added, _MERGE_BLOCK):
            among[at : at + _MERGE_BLOCK] = np.searchsorted(
                self._keys[:count], keys[at : at + _MERGE_BLOCK]
            )
        for at in reversed(range(0, count, _MERGE_BLOCK)):  # the last first: none is overwritten
            end = min(at + _MERGE_BLOCK, count)
            # an old entry moves up by the new ones placed before it: those before the block,
            # and those inside it up to it (counted, not searched: the block is the larger)
            first, last = np.searchsorted(among, [at, end])
            inside = np.bincount(among[first:last] - at, minlength=end - at)
            goes = np.cumsum(inside) + (int(first) + at) + np.arange(end - at)
            self._offsets[goes] = self._offsets[at:end].copy()
            self._keys[goes] = self._keys[at:end].copy()
        for at in range(0, added, _MERGE_BLOCK):
            places = among[at : at + _MERGE_BLOCK] + np.arange(at, min(at + _MERGE_BLOCK, added))
            self._keys[places] = keys[at : at + _MERGE_BLOCK]
            given = slots[at : at + _MERGE_BLOCK].astype(np.int64) + (slot_base - base)
            self._offsets[places] = given
        self.count = count + added
        self.items += items
        return self

    def absorbed(self, other: _Run, alive: NDArray[np.bool_], room: int, dead: int) -> _Run:
        """`merged` with another run's entries, as they are held (sorted, offsets and base)."""
        return self.merged(
            other.keys,
            other.offsets,
            other.items,
            alive,
            ordered=True,
            room=room,
            slot_base=other.base,
            dead=dead,
            given_alive=other.clean_at == dead,
        )

    def spans(self, other: _Run) -> bool:
        """Whether `other`'s slots fit this run's offsets as they are, so that merging it in is
        done in place (see `_shape`). Where they did not, the merge widened the offsets to 32
        bits in new arrays while the old were still held: a full run's 16 MiB more at once,
        which made the peak of a first pass of 10,000 sources (244 MiB, over its 250 MB)."""
        if not other.count or not self.count or self._offsets.dtype == np.int32:
            return True
        offsets = other.offsets
        low, high = other.base + int(offsets.min()), other.base + int(offsets.max())
        return low >= self.base and high - self.base < _OFFSET_SPAN

    def _shape(
        self, slots: NDArray[Any], slot_base: int, bounds: tuple[int, int] | None = None
    ) -> tuple[int, np.dtype[Any]]:
        """The base and offset type of the merged run: this run's where the new slots fit them
        (so the merge can be done in place; the offsets held fit already), else from the lowest
        and highest slot of all."""
        if not len(slots):
            return self.base, self._offsets.dtype
        if bounds is not None:
            low, high = bounds
        else:
            low, high = slot_base + int(slots.min()), slot_base + int(slots.max())
        if self.count and self._offsets.dtype == np.int32:
            return self.base, self._offsets.dtype  # slots themselves: any fits
        if self.count and low >= self.base and high - self.base < _OFFSET_SPAN:
            return self.base, self._offsets.dtype
        if self.count:
            offsets = self.offsets
            low = min(low, self.base + int(offsets.min()))
            high = max(high, self.base + int(offsets.max()))
        if high - low < _OFFSET_SPAN:
            return low, np.dtype(np.uint16)
        return 0, np.dtype(np.int32)

    def _drop_dead(self, alive: NDArray[np.bool_]) -> None:
        """The dead entries out, in place: live ones move down, a block at a time."""
        kept = 0
        for at in self._blocks():
            end = min(at + _MERGE_BLOCK, self.count)
            live = alive[self.base :][self._offsets[at:end]]
            if kept == at and live.all():
                kept = end
                continue
            keys, offsets = self._keys[at:end][live], self._offsets[at:end][live]
            self._keys[kept : kept + len(keys)] = keys
            self._offsets[kept : kept + len(keys)] = offsets
            kept += len(keys)
        self.count = kept

    def _move(
        self, alive: NDArray[np.bool_], base: int, dtype: np.dtype[Any], adding: int, room: int
    ) -> None:
        """The live entries into new arrays, with room for `adding` more (and for `room` in
        all), their offsets from `base` in `dtype`."""
        offsets = self.offsets  # the run's, not its room
        live = [alive[self.base :][offsets[at : at + _MERGE_BLOCK]] for at in self._blocks()]
        kept = sum(int(np.count_nonzero(block)) for block in live)
        size = max(kept + adding, room)
        keys, moved = _room(size, np.dtype(np.uint32)), _room(size, dtype)
        done = 0
        for at, block in zip(self._blocks(), live, strict=True):
            end = at + len(block)
            count = int(np.count_nonzero(block))
            keys[done : done + count] = self._keys[at:end][block]
            moved[done : done + count] = offsets[at:end][block].astype(np.int64) + (
                self.base - base
            )
            done += count
        self._keys, self._offsets, self.base, self.count = keys, moved, base, done

    def _blocks(self) -> range:
        return range(0, self.count, _MERGE_BLOCK)


def _room(count: int, dtype: np.dtype[Any]) -> NDArray[Any]:
    """A zeroed array whose pages cost memory only once written: an anonymous map of its own,
    in small pages. numpy asks for huge pages for its large arrays, and a run's arrays, mostly
    room at first, then paid for what they held in steps of 2 MiB (2 to 4 MiB more a run)."""
    size = count * dtype.itemsize
    if size < _MAPPED_FROM:
        return np.zeros(count, dtype=dtype)
    private = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}
    memory = mmap.mmap(-1, size, **private)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # where the system gives them unasked
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype=dtype)


_MAPPED_FROM = 1 << 17
_SPREADS_KEPT = 64  # batch sizes up to this have their slots' pattern kept (`_spread`)


_OFFSET_SPAN = 1 << 16  # slot offsets below this fit in 16 bits
_FENCE_STEP = 64  # a run's fences: every 64th key (a block of 256 bytes, four cache lines)
_FENCED_FROM = 1 << 13  # a run of fewer keys (32 KiB) is searched whole


def _flat(values: NDArray[Any]) -> NDArray[Any]:
    """A contiguous array, as the C code reads them (most are already)."""
    return values if values.flags.c_contiguous else np.ascontiguousarray(values)


_EMPTY_KEYS = np.zeros(0, dtype=np.uint32)
_EMPTY_OFFSETS = np.zeros(0, dtype=np.uint16)


class _Bits:
    """A Bloom filter over band keys: most query keys are in no run, and this answers that with
    one memory access where a binary search over millions of keys takes a dozen cache misses.
    Three bits of one 64-bit word a key, at 8 bits a key: about 4% false positives (two bits
    anywhere in the filter gave 5%, and cost two accesses), of any size in words (a power of two
    would cost up to twice that); rebuilt half as large again when full."""

    BITS_PER_KEY = 8

    def __init__(self, keys: int) -> None:
        self.capacity = max(1 << 16, keys)
        self.words = np.zeros(-(-min(self.capacity * self.BITS_PER_KEY, 1 << 32) // 64), np.uint64)
        self.size = len(self.words) * 64  # bits: at most 2**32
        self.count = 0

    def _spots(self, keys: NDArray[np.uint32]) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
        """Each key's word (the high half of a multiplicative hash, scaled to the words) and its
        three bits there (from the low bits)."""
        one, low = np.uint64(1), np.uint64(63)
        with np.errstate(over="ignore"):
            mixed = keys.astype(np.uint64) * _MIX
            words = ((mixed >> np.uint64(32)) * np.uint64(len(self.words))) >> np.uint64(32)
            mask = one << (mixed & low)
            mask |= one << ((mixed >> np.uint64(6)) & low)
            mask |= one << ((mixed >> np.uint64(12)) & low)
        return words, mask

    def add(self, keys: NDArray[np.uint32]) -> None:
        if speedups.native is not None:  # `bitwise_or.at` is slow (0.05 us a key)
            speedups.native.bloom_add(self.words, self.size, _flat(keys))
            self.count += len(keys)
            return
        for start in range(0, len(keys), _BITS_BLOCK):  # temporaries of 8 bytes a key, bounded
            np.bitwise_or.at(self.words, *self._spots(keys[start : start + _BITS_BLOCK]))
        self.count += len(keys)

    def may_hold(self, keys: NDArray[np.uint32]) -> NDArray[np.bool_]:
        words, mask = self._spots(keys)
        return np.asarray((self.words[words] & mask) == mask, dtype=bool)


class _Rows:
    """A table of fixed-width rows kept in blocks that never move: growing it copies nothing.
    A contiguous array grown by copying held the old and the new array at once, and the
    signatures are most of an item's bytes. Blocks come from calloc, so the rows not yet
    written cost address space, not memory."""

    BLOCK = 16_384

    def __init__(self, width: int, dtype: type[np.generic]) -> None:
        self.width = width
        self.dtype = dtype
        self.blocks: list[NDArray[Any]] = []
        self.rows = 0  # rows up to the last one written

    def reserve(self, rows: int) -> None:
        while len(self.blocks) * self.BLOCK < rows:
            self.blocks.append(np.zeros((self.BLOCK, self.width), dtype=self.dtype))

    def truncate(self, rows: int) -> None:
        """Give back the blocks past `rows` (one at least is kept)."""
        del self.blocks[max(1, -(-rows // self.BLOCK)) :]
        self.rows = min(self.rows, rows)

    def put(self, start: int, values: NDArray[Any]) -> None:
        at = 0
        while at < len(values):
            block, offset = divmod(start + at, self.BLOCK)
            count = min(self.BLOCK - offset, len(values) - at)
            self.blocks[block][offset : offset + count] = values[at : at + count]
            at += count
        self.rows = max(self.rows, start + len(values))

    def take(self, slots: NDArray[Any]) -> NDArray[Any]:
        if len(self.blocks) == 1:
            return np.asarray(self.blocks[0][slots])
        found = np.empty((len(slots), self.width), dtype=self.dtype)
        which = slots // self.BLOCK
        for block in _distinct(which).tolist():
            rows = np.nonzero(which == block)[0]
            found[rows] = self.blocks[block][slots[rows] - block * self.BLOCK]
        return found

    def compact(self, live: NDArray[np.int64]) -> None:
        """Keep the rows at `live` (ascending), moved to the front in order, a block at a time:
        a row only ever moves down, onto rows already moved."""
        for start in range(0, len(live), self.BLOCK):
            self.put(start, self.take(live[start : start + self.BLOCK]))
        self.truncate(len(live))

    @property
    def nbytes(self) -> int:
        """The bytes of the rows written: the rest of a block is not yet memory."""
        return self.rows * self.width * np.dtype(self.dtype).itemsize


class SimilarityIndex:
    """Fingerprints of the items in the window, to find the ones like a new item.

    Band keys live in sorted runs: the last few hundred items (recent), up to YOUNG items
    (young), then full runs of up to OLD items each. A batch is merged into the recent run, that
    one into the young run every RECENT items, and the young run into the last full run every
    YOUNG items while it has room (else it becomes a full run itself). Work is done a batch at
    a time (a poll's entries), in numpy, with Python loops only over actual hits.

    An item costs about 610 bytes with `bits=16`: the low 16 bits of its 128 MinHash values
    (256), 42 band keys of 32 bits (168) with its slot as a 16-bit offset beside each (84), its
    bits in the filter (42 to 63), its headline numbers, id, time and liveness (33); the full
    fingerprint stays in storage. With `bits=8` (what storage uses: it confirms the candidates
    against the full fingerprints, `confirm`), the low 8 bits: about 480 bytes. Nothing big is
    ever copied whole, so the peak stays near the total: the signatures sit in blocks that
    never move, a run is merged into in place (its arrays have room for a full run, paid for
    only as it fills), and a big batch (the window loaded at start) makes full runs of OLD
    items.
    """

    RECENT = 256
    YOUNG = 8192
    OLD = 65_536  # items in a full run (the room its arrays are given)

    def __init__(self, threshold: float, window: timedelta, *, bits: int = 16) -> None:
        if bits not in (8, 16):
            raise ValueError(f"bits: 8 or 16, not {bits}")
        self.bits = bits
        self.threshold = threshold
        self.window = window
        self.bands, self.rows = lsh_shape(threshold)
        self.needed = bands_needed(threshold, self.bands, self.rows)
        self.watermark = 0  # highest item id seen: storage catches up from here
        self._lock = threading.RLock()
        self._expired_at: datetime | None = None
        self.compared = 0  # pairs of one batch whose signatures were compared (similar_within)
        # the last batch's signatures and band keys: storage looks a new batch up, compares it
        # within itself and adds it, three calls with the same fingerprints
        self._last: tuple[tuple[bytes, ...], NDArray[np.uint32], NDArray[np.uint32]] | None = None
        self._last_moments: tuple[tuple[datetime, ...], NDArray[np.float64]] | None = None
        self._spreads: dict[int, NDArray[np.int32]] = {}  # see _spread
        self._reset()

    def _reset(self, capacity: int = 1024) -> None:
        self._sigs = _Rows(NUM_PERM, np.uint8 if self.bits == 8 else np.uint16)  # see _low
        self._sigs.reserve(capacity)
        self._numbers = np.zeros((capacity, NUMBERS), dtype=np.uint32)
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._times = np.zeros(capacity, dtype=np.float64)
        self._alive = np.zeros(capacity, dtype=bool)
        self._size = 0
        self._dead = 0
        self._ordered = True  # ids ascend with their slots (storage adds them in id order)
        self._runs = [_Run(), _Run()]  # recent, young, then full runs, oldest first
        self._bits = _Bits(capacity * self.bands)

    def __len__(self) -> int:
        return self._size - self._dead

    def _band_keys(self, sigs: NDArray[np.uint32]) -> NDArray[np.uint32]:
        """One 32-bit key per signature and band, from the full values: collisions only add
        candidates to check (with 250,000 items, about one query in ten gets one)."""
        native = speedups.native
        if native is not None:  # the same keys in C, made in one call
            made = native.band_keys(_flat(sigs), sigs.shape[1], self.bands, self.rows)
            return np.frombuffer(made, dtype=np.uint32).reshape(len(sigs), self.bands)
        count = len(sigs)
        bands = sigs[:, : self.bands * self.rows].reshape(count, self.bands, self.rows)
        keys = np.zeros((count, self.bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for row in range(self.rows):
                keys *= _MIX
                keys += bands[:, :, row]
                keys ^= keys >> np.uint64(29)
            keys += np.arange(self.bands, dtype=np.uint64) * _MIX
        return (keys >> np.uint64(32)).astype(np.uint32)

    def _keyed(self, fps: Sequence[bytes]) -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
        """The signatures of a batch and their band keys (flat), made once for the same batch
        (read-only: callers share them)."""
        batch = tuple(fps)
        last = self._last
        if last is not None and last[0] == batch:
            return last[1], last[2]
        sigs = _signatures(batch)
        keys = self._band_keys(sigs).ravel()
        sigs.flags.writeable = keys.flags.writeable = False
        self._last = (batch, sigs, keys)
        return sigs, keys

    def _moments(self, whens: Sequence[datetime]) -> NDArray[np.float64]:
        """The times of a batch as POSIX seconds, made once for the same batch (read-only, like
        `_keyed`): its three calls each made them, a twentieth of the index's time."""
        batch = tuple(whens)
        last = self._last_moments
        if last is not None and last[0] == batch:
            return last[1]
        moments = np.array([when.timestamp() for when in batch], dtype=np.float64)
        moments.flags.writeable = False
        self._last_moments = (batch, moments)
        return moments

    def add(self, item_id: int, fp: bytes, when: datetime) -> None:
        self.add_many([(item_id, fp, when)])

    def add_many(self, rows: Iterable[tuple[int, bytes, datetime]]) -> None:
        with self._lock:
            batch = list(rows)
            ids = [row[0] for row in batch]
            if len(set(ids)) < len(ids):  # an id given twice: its last row, in its first place
                batch = list({row[0]: row for row in batch}.values())
                ids = [row[0] for row in batch]
            if batch and min(ids) <= self.watermark:
                held = set(self._ids[self._slots_of(ids)].tolist())
                batch = [row for row in batch if row[0] not in held]
            if not batch:
                return
            for at in range(0, len(batch), self.OLD):  # a big batch makes runs of OLD items
                self._add(batch[at : at + self.OLD])
            if len(batch) > self.RECENT:
                # kept for the three calls of a save's batch, not this one
                self._last = self._last_moments = None

    def _add(self, batch: list[tuple[int, bytes, datetime]]) -> None:
        self._grow(self._size + len(batch))
        start = self._size
        end = start + len(batch)
        full, keys = self._keyed([fp for _, fp, _ in batch])
        # (in Python, not numpy: a poll's few ids cost less as a list, a tenth of adding them)
        ids = [item_id for item_id, _, _ in batch]
        self._sigs.put(start, self._low(full[:, :NUM_PERM]))
        self._numbers[start:end] = full[:, NUM_PERM:]
        self._ordered = (
            self._ordered
            and (start == 0 or ids[0] > int(self._ids[start - 1]))
            and all(map(operator.lt, ids, itertools.islice(ids, 1, None)))
        )
        self._ids[start:end] = ids
        self._times[start:end] = self._moments([when for _, _, when in batch])
        self._alive[start:end] = True
        self._size = end
        self.watermark = max(self.watermark, max(ids))
        self._remember(keys)
        slots = self._spread(len(batch)) + np.int32(start)
        if len(batch) >= self.YOUNG:  # a window loaded: runs of OLD items of their own
            self._to_full(_Run().merged(keys, slots, len(batch), self._alive, dead=self._dead))
        else:
            # Every smaller batch (a poll's, a group's few hundred items) goes the recent and
            # young runs' way, so every run holds its slots in the order added and a full run's
            # offsets keep to 16 bits. Groups of more than RECENT items went straight to the
            # last full run: their slots interleaved with the young run's and overflowed 16 bits.
            room = 2 * self.RECENT * self.bands
            self._runs[0] = self._runs[0].merged(
                keys, slots, len(batch), self._alive, room=room, dead=self._dead,
                bounds=(start, end - 1),
            )  # fmt: skip
            self._settle()

    def _spread(self, count: int) -> NDArray[np.int32]:
        """Each of `count` positions once per band, in order (the slots of a batch, less its
        first): a poll's sizes are kept, each made once."""
        made = self._spreads.get(count)
        if made is None:
            made = np.repeat(np.arange(count, dtype=np.int32), self.bands)
            if count <= _SPREADS_KEPT:  # (350 KiB at most)
                self._spreads[count] = made
        return made

    def _slots_of(self, item_ids: Sequence[int]) -> NDArray[np.int64]:
        """The live slots holding these ids: a binary search while ids ascend with their slots
        (as storage adds them), else a scan. A dict from id to slot cost 115 bytes an item."""
        wanted = np.asarray(item_ids, dtype=np.int64)
        held = self._ids[: self._size]
        if self._ordered:
            at = np.searchsorted(held, wanted)
            at = at[at < len(held)]
            found: NDArray[np.int64] = _distinct(at[np.isin(held[at], wanted)])
        else:
            found = np.nonzero(np.isin(held, wanted))[0]
        return found[self._alive[found]]

    def _remember(self, keys: NDArray[np.uint32]) -> None:
        """Add keys to the filter, rebuilding it half as large again when it is full."""
        if self._bits.count + len(keys) > self._bits.capacity:
            held = [run.keys for run in self._runs]
            total = sum(len(k) for k in held) + len(keys)
            self._bits = _Bits(0)  # the old filter goes before the new one is made
            self._bits = _Bits(total + total // 2)
            for run_keys in held:
                self._bits.add(run_keys)
        self._bits.add(keys)

    def _settle(self) -> None:
        """Recent additions go to the young run every RECENT items, the young run to the last
        full run every YOUNG items while that has room for them, else it becomes one itself."""
        recent, young, *old = self._runs
        if recent.items >= self.RECENT:
            room = (self.YOUNG + 2 * self.RECENT) * self.bands  # more, and the young run grows
            young = young.absorbed(recent, self._alive, room, self._dead)
            recent = _Run()
        self._runs = [recent, young, *old]
        if young.items >= self.YOUNG:
            self._runs[1] = _Run()
            self._to_full(young)

    def _to_full(self, run: _Run) -> None:
        """A run's entries into the last full run while it has room for them and its offsets
        hold their slots (`_Run.spans`), else the run becomes a full one itself."""
        last = self._runs[-1] if len(self._runs) > 2 else None
        if last is not None and last.items + run.items <= self.OLD and last.spans(run):
            room = self.OLD * self.bands
            self._runs[-1] = last.absorbed(run, self._alive, room, self._dead)
        else:
            self._runs.append(run)

    def _grow(self, needed: int) -> None:
        self._sigs.reserve(needed)
        capacity = len(self._ids)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        for name in ("_numbers", "_ids", "_times", "_alive"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def similar(self, fp: bytes, when: datetime) -> list[Match]:
        """Items at least `threshold` alike and within the window of `when`, most alike first."""
        return self.similar_many([fp], [when])[0]

    def similar_many(
        self, fps: Sequence[bytes], whens: Sequence[datetime], after: int = 0
    ) -> list[list[Match]]:
        """`similar` for a batch; the batch's items are not compared with each other. `after`:
        only items with a higher id (those stored since an earlier look)."""
        if not fps:
            return []
        with self._lock:
            sigs, query = self._keyed(fps)
            native = speedups.native
            if native is not None:
                runs = [run.held() for run in self._runs]
                found = native.lookup(query, self._bits.words, self._bits.size, self.bands, runs)
                return self._verified(native, sigs, whens, found, after)
            maybe = np.nonzero(self._bits.may_hold(query))[0]
            # searched for in order: each binary search starts where the last one ended
            maybe = maybe[np.argsort(query[maybe], kind="stable")]
            wanted = query[maybe]
            owners, slots = [], []
            for run in self._runs:
                at, found = run.lookup(wanted)
                owners.append(maybe[at] // self.bands)
                slots.append(found)
            return self._verify(sigs, whens, np.concatenate(owners), np.concatenate(slots), after)

    def _verified(
        self,
        native: Any,
        sigs: NDArray[np.uint32],
        whens: Sequence[datetime],
        found: tuple[bytes, bytes],
        after: int,
    ) -> list[list[Match]]:
        """`_verify` in C, over what the C lookup found."""
        result: list[list[Match]] = [[] for _ in whens]
        moments = self._moments(whens)
        for query, item_id, score in native.verify(
            np.frombuffer(found[0], dtype=np.int64),
            np.frombuffer(found[1], dtype=np.int32),
            self.needed,
            after,
            self._ids,
            self._alive,
            self._times,
            moments,
            self.window.total_seconds(),
            sigs,
            self._sigs.blocks,
            self._sigs.BLOCK,
            self.bits,
            self._numbers,
            self.threshold,
            _MAX_CANDIDATES,
        ):
            result[query].append(Match(item_id, score))
        return _most_alike_first(result)

    def _verify(
        self,
        sigs: NDArray[np.uint32],
        whens: Sequence[datetime],
        owners: NDArray[np.int64],
        slots: NDArray[np.int32],
        after: int,
    ) -> list[list[Match]]:
        """Score every (query, candidate) pair of a batch at once: done query by query, numpy's
        per-call cost made this a tenth of a first poll's time in the poller."""
        result: list[list[Match]] = [[] for _ in whens]
        codes = _shared(owners * len(self._ids) + slots, self.needed)
        owners, slots = codes // len(self._ids), (codes % len(self._ids)).astype(np.int32)
        if after:
            keep = self._ids[slots] > after
            owners, slots = owners[keep], slots[keep]
        ends = np.cumsum(np.bincount(owners, minlength=len(whens)))
        newest = ends[owners] - np.arange(len(owners)) <= _MAX_CANDIDATES  # per query, in order
        owners, slots = owners[newest], slots[newest]
        moments = self._moments(whens)
        span = self.window.total_seconds()
        near = self._alive[slots] & (np.abs(self._times[slots] - moments[owners]) <= span)
        owners, slots = owners[near], slots[near]
        low = self._low(sigs[:, :NUM_PERM])
        for top in range(0, len(owners), _PAIR_BLOCK):
            mine, theirs = owners[top : top + _PAIR_BLOCK], slots[top : top + _PAIR_BLOCK]
            scores = np.count_nonzero(self._sigs.take(theirs) == low[mine], axis=1) / NUM_PERM
            good = np.nonzero(scores >= self.threshold)[0]  # numbers only for those alike
            good = good[~_pair_conflicts(sigs[mine[good], NUM_PERM:], self._numbers[theirs[good]])]
            for query, item_id, score in zip(
                mine[good].tolist(),
                self._ids[theirs[good]].tolist(),
                scores[good].tolist(),
                strict=True,
            ):
                result[query].append(Match(int(item_id), float(score)))
        return _most_alike_first(result)

    def similar_within(
        self, fps: Sequence[bytes], whens: Sequence[datetime]
    ) -> list[list[tuple[int, float]]]:
        """For each item of a batch, the earlier ones of the same batch it is alike, as
        (position, score), most alike first (the earliest of equals first).

        Candidates come from the same LSH bands as the index uses, so a pair is found here as it
        would be across two batches. In a band bucket holding more than WITHIN_HEAD +
        WITHIN_TAIL earlier items (a feed of near-copies), only the first and the latest of them
        are compared: comparing every pair made a feed of 45,000 near-copies take a quarter of
        an hour. `compared` counts the pairs whose signatures were compared."""
        with self._lock:  # `compared` and the last batch's keys are the index's
            result: list[list[tuple[int, float]]] = [[] for _ in fps]
            if len(fps) < 2:
                return result
            sigs, keys = self._keyed(fps)
            times = self._moments(whens)
            span = self.window.total_seconds()
            native = speedups.native
            if native is not None:
                result, compared = native.within(
                    keys, self.bands, self.needed, WITHIN_HEAD, WITHIN_TAIL, sigs, times, span,
                    self.threshold,
                )  # fmt: skip
                self.compared += compared
            else:
                self._within_pairs(sigs, keys, times, result)
            for pairs in result:  # candidates come in order of position: equals stay earliest first
                if len(pairs) > 1:
                    pairs.sort(key=lambda pair: -pair[1])
            return result

    def _within_pairs(
        self,
        sigs: NDArray[np.uint32],
        keys: NDArray[np.uint32],
        times: NDArray[np.float64],
        result: list[list[tuple[int, float]]],
    ) -> None:
        """`similar_within`'s pairs in numpy (where the C part was not built), into `result`."""
        later, earlier = self._within_candidates(keys, len(sigs))
        self.compared += len(later)
        span = self.window.total_seconds()
        for top in range(0, len(later), _PAIR_BLOCK):
            i, j = later[top : top + _PAIR_BLOCK], earlier[top : top + _PAIR_BLOCK]
            a, b = sigs[i], sigs[j]
            scores = np.count_nonzero(a[:, :NUM_PERM] == b[:, :NUM_PERM], axis=1) / NUM_PERM
            good = (scores >= self.threshold) & (np.abs(times[i] - times[j]) <= span)
            good &= ~_pair_conflicts(a[:, NUM_PERM:], b[:, NUM_PERM:])
            for x, y, score in zip(
                i[good].tolist(), j[good].tolist(), scores[good].tolist(), strict=True
            ):
                result[x].append((y, score))

    def _within_candidates(
        self, keys: NDArray[np.uint32], count: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Distinct (later, earlier) positions of a batch of `count` items (`keys`: their band
        keys, flat) that share a band bucket, sorted; in a bucket, each item is paired with the
        first WITHIN_HEAD and the last WITHIN_TAIL items before it, so the pairs are at most
        bands x (WITHIN_HEAD + WITHIN_TAIL) an item."""
        order = np.argsort(keys, kind="stable")  # a bucket's items in order of position
        ranked = keys[order]
        item = order // self.bands
        starts = np.ones(len(ranked), dtype=bool)
        starts[1:] = ranked[1:] != ranked[:-1]
        places = np.arange(len(ranked))
        first = np.maximum.accumulate(np.where(starts, places, 0))
        rank = places - first  # how many items come before this one in its bucket
        shared = np.nonzero(rank)[0]
        rank, first = rank[shared], first[shared]
        deepest = int(rank.max()) if len(rank) else 0
        later, earlier = [], []
        for t in range(min(WITHIN_HEAD, deepest)):  # the first items of the bucket
            take = rank > t
            later.append(item[shared[take]])
            earlier.append(item[first[take] + t])
        for t in range(1, min(WITHIN_TAIL, deepest - WITHIN_HEAD) + 1):  # the latest
            take = rank - t >= WITHIN_HEAD
            later.append(item[shared[take]])
            earlier.append(item[shared[take] - t])
        if not later:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        codes = _shared(np.concatenate(later) * count + np.concatenate(earlier), self.needed)
        codes = codes[codes // count > codes % count]  # one item twice in a bucket
        return codes // count, codes % count

    def remove(self, item_ids: Sequence[int]) -> None:
        with self._lock:
            if not item_ids or not self._size:
                return
            slots = self._slots_of(item_ids)
            self._alive[slots] = False
            self._dead += len(slots)

    def expire(self, now: datetime) -> int:
        """Forget items older than the window; reclaims memory once half the slots are dead.
        Runs at most once a minute (of `now`): it looks at every slot."""
        with self._lock:
            if self._expired_at is not None and abs(now - self._expired_at) < _EXPIRE_EVERY:
                return 0
            self._expired_at = now
            cutoff = (now - self.window).timestamp()
            size = self._size
            old = self._alive[:size] & (self._times[:size] < cutoff)
            gone = int(np.count_nonzero(old))
            if gone:
                self._alive[:size][old] = False
                self._dead += gone
            if self._dead > 1024 and self._dead * 2 > self._size:
                self._compact()
            return gone

    def _compact(self) -> None:
        """Keep the live items only, in runs of OLD items. The band keys come from the runs
        (the full signatures they were made from are no longer held), their slots renumbered;
        the signatures move down in place."""
        live = np.nonzero(self._alive[: self._size])[0]
        count = len(live)
        renumber = np.full(self._size, -1, dtype=np.int32)
        renumber[live] = np.arange(count, dtype=np.int32)
        held = []
        for run in self._runs:
            keep = run._alive(self._alive)
            held.append((run.keys[keep], run.slots[keep]))
        self._runs = []
        self._sigs.compact(live)
        sigs = self._sigs
        numbers, ids, times = self._numbers[live], self._ids[live], self._times[live]
        self._reset(max(1024, count))
        self._sigs = sigs
        self._numbers[:count], self._ids[:count], self._times[:count] = numbers, ids, times
        self._alive[:count] = True
        self._size = count
        self._ordered = bool(np.all(ids[1:] > ids[:-1]))
        del numbers, ids, times
        keys = np.concatenate([k for k, _ in held])
        slots = renumber[np.concatenate([s for _, s in held])]
        del held, renumber
        self._remember(keys)
        # runs of OLD items' keys, by slot: each a sorted run of its own
        for first in range(0, count, self.OLD):
            part = np.nonzero((slots >= first) & (slots < first + self.OLD))[0]
            items = min(self.OLD, count - first)
            self._runs.append(_Run().merged(keys[part], slots[part], items, self._alive))

    def _low(self, values: NDArray[np.uint32]) -> NDArray[Any]:
        """The low bits of MinHash values, which is what the index keeps of each (b-bit
        MinHash). With 16, two values of different items agree by chance one time in 65,536, so
        a score rises by (1 - J) / 65,536 at most on average, far below the 1/128 a single value
        weighs; with 8, one time in 256, so a score is an upper bound (a pair above the threshold
        is never missed) that `confirm` makes exact. 8 bits save 128 bytes an item: 32 MiB of a
        window of 250,000 items."""
        return values.astype(np.uint8 if self.bits == 8 else np.uint16)

    def confirm(self, fp: bytes, candidates: Sequence[tuple[int, bytes]]) -> list[Match]:
        """Of the items `similar_many` gave for `fp`, given with their full fingerprints (from
        storage), those alike by the rule on the full values (`alike`), with exact scores, most
        alike first: what the index answers with `bits=8` is a superset of this, scored at most
        a few 256ths high."""
        found = []
        for item_id, other in candidates:
            score, conflict = _compared(fp, other)
            if score >= self.threshold and not conflict:
                found.append(Match(item_id, score))
        return sorted(found, key=lambda match: (-match.score, match.item_id))

    def memory_bytes(self) -> int:
        """Bytes held by the index's arrays."""
        held = self._sigs.nbytes + self._numbers.nbytes + self._ids.nbytes + self._times.nbytes
        held += self._alive.nbytes
        held += self._bits.words.nbytes
        held += sum(run.keys.nbytes + run.offsets.nbytes for run in self._runs)
        return held + sum(run._fences.nbytes for run in self._runs if run._fences is not None)


def _most_alike_first(found: list[list[Match]]) -> list[list[Match]]:
    """Each query's matches, most alike first (the lowest id of equals first)."""
    for matches in found:
        if len(matches) > 1:  # (most have none or one)
            matches.sort(key=lambda match: (-match.score, match.item_id))
    return found


def _signatures(fps: Sequence[bytes]) -> NDArray[np.uint32]:
    return np.frombuffer(b"".join(fps), dtype="<u4").reshape(len(fps), FP_WORDS)


if __name__ == "__main__":
    from pathlib import Path

    Path(minhash_table.__file__).write_text(render_table(), encoding="utf-8")
