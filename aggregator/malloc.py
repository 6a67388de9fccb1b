"""A fixed mmap threshold for glibc's malloc, so memory that large arrays free goes back.

glibc raises its mmap threshold each time a block allocated by mmap is freed (up to 32 MiB);
from then on, blocks of that size come from the heap, which gives memory back only from its top.
The story index merges its runs of band keys into new arrays, and each poll allocates bodies and
documents of tens of kilobytes: with the moving threshold, a first pass of 1,000 sources peaked
at 201 MiB, with a fixed one (glibc's own default, 128 KiB) at 160 MiB, in the same time (when
the index still grew its arrays by copying them); filling today's index with 250,000 items grows
the process by 723 bytes an item with the moving threshold against 604. Elsewhere (musl,
macOS) this does nothing.

`few_arenas` caps glibc's malloc arenas at two in the polling processes (`poll`, `worker`). glibc
gives each thread that meets a busy arena one of its own, up to eight a core, and an arena keeps
what it freed: the poller's eight fetching threads made ten arenas. Peak RSS of a first pass with
the cap against without: 1,000 sources 123.1 against 126.2 MiB (`bench ingest`, 3 rounds each),
10,000 sources 276 against 283 MiB (one run each), in the same wall and CPU time within the noise
(the threads mostly wait on the network and the GIL, not on malloc). `run` and `web` keep glibc's
way: with the cap the web server answered 9% fewer full responses (`bench serve`, medians of 9
noisy rounds: 4,315 against 4,729 200s/s; 304s the same), while a soak of `run` held 11 MiB less;
the README tells operators who prefer the memory to set MALLOC_ARENA_MAX=2, and an operator's own
MALLOC_ARENA_MAX or glibc.malloc.arena_max tunable is always left as they set it.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable

M_MMAP_THRESHOLD = -3  # mallopt's parameter numbers, from glibc's malloc.h
M_ARENA_MAX = -8
THRESHOLD = 128 * 1024
ARENAS = 2


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    # the symbols the process has loaded already (the C library's among them): finding libc by
    # name (ctypes.util.find_library) runs ldconfig, and its import that of subprocess, at
    # every command's start
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def steady() -> bool:
    """Fix the threshold for this process; True where glibc took it."""
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))


def few_arenas() -> bool:
    """Cap this process's malloc arenas at ARENAS, before its threads start; True where glibc
    took it (False too where the operator set a cap of their own, which stands)."""
    if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, ARENAS))
