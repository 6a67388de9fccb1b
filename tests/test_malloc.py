"""The fixed mmap threshold: an index filled by a process that set it grows by its arrays, not
by the heap that glibc's moving threshold leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aggregator import malloc

FILL = """
import random, sys
from datetime import UTC, datetime, timedelta
from aggregator import malloc
from aggregator.process.dedupe import SimilarityIndex, minhash_values
from aggregator.process.fingerprint import NUMBERS
if sys.argv[1] == "steady":
    assert malloc.steady()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
rng = random.Random(1)
count = 20_000
prints = [
    minhash_values([rng.getrandbits(32) for _ in range(40)]).astype("<u4").tobytes()
    + bytes(4 * NUMBERS)
    for _ in range(count)
]
index = SimilarityIndex(0.5, timedelta(hours=72))
start, before = datetime(2026, 11, 20, tzinfo=UTC), rss()
for at in range(0, count, 25):
    index.add_many([(at + n + 1, prints[at + n], start) for n in range(25)])
print((rss() - before) / count, index.memory_bytes() / count)
"""


def _grown(mode: str, *, pure: bool = False) -> tuple[float, float]:
    env = dict(os.environ)
    env.pop("AGGREGATOR_PURE_PYTHON", None)
    if pure:
        env["AGGREGATOR_PURE_PYTHON"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", FILL, mode], capture_output=True, text=True, check=True, env=env
    )
    grown, arrays = done.stdout.split()
    return float(grown), float(arrays)


@pytest.mark.skipif(not malloc.steady(), reason="not glibc: mallopt is not there to call")
def test_with_a_fixed_threshold_the_index_costs_about_its_arrays() -> None:
    grown, arrays = _grown("steady")
    assert grown < arrays * 1.4  # the arrays, little else (the C merge and lookup where built)
    # The moving threshold is what this saves (glibc's way) where numpy does the index's work:
    # its temporaries of a merge raise the threshold, and the heap keeps what they freed. (The
    # C code makes few temporaries, so there both ways cost about the arrays.) glibc's way
    # usually costs 950-1,150 bytes an item here, but about one run in twenty-five raised its
    # threshold late and cost 760: the larger of two runs shows what it costs.
    grown, _ = _grown("steady", pure=True)
    moving = max(_grown("moving", pure=True)[0] for _ in range(2))
    assert grown < arrays * 1.4
    # 1.4 times as much when the index grew its arrays by copying them, about 1.2 since it
    # keeps its signatures in blocks
    assert moving > grown * 1.1


THREADS = """
import ctypes, ctypes.util, sys, threading
from aggregator import malloc
if sys.argv[1] == "capped":
    assert malloc.few_arenas()
elif sys.argv[1] == "operator's":
    assert not malloc.few_arenas()  # their cap stands
held = []
started = threading.Barrier(8)
def work():
    started.wait()  # all at once, so each meets the others' arenas busy
    for _ in range(2_000):
        held.append(bytearray(256))
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.open_memstream.restype = ctypes.c_void_p
buffer, size = ctypes.c_char_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
print(buffer.value.decode().count("<heap nr="))
"""


def _arenas(mode: str, **settings: str) -> int:
    # glibc's own way, whatever cap the environment sets (container images often set one)
    environment = {
        k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
    }
    environment.update(settings)
    done = subprocess.run(
        [sys.executable, "-c", THREADS, mode],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    return int(done.stdout)


@pytest.mark.skipif(not malloc.steady(), reason="not glibc: mallopt is not there to call")
def test_polling_threads_share_two_arenas_unless_the_operator_says_otherwise() -> None:
    assert _arenas("capped") <= malloc.ARENAS
    assert _arenas("glibc's") > malloc.ARENAS  # glibc's way: an arena for most threads
    assert _arenas("operator's", MALLOC_ARENA_MAX="4") == 4
