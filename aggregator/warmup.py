"""Start-up without the cyclic garbage collector.

A command's imports (SQLAlchemy, aiohttp, the config's types) make about 110,000 objects that
live as long as the process, and the collector, run every 700 new objects, walks the growing heap
again and again while they are made: importing what `poll` needs took 0.73-0.84 s with it off
against 0.92-0.96 s with it on. So a command starts with it off (`pause`), and once its imports
are done and its config is loaded (`resume`) what start-up made is frozen (`gc.freeze`: moved
where no collection walks it again, which also makes every later full collection cheaper) and
the collector is turned back on, run every YOUNG new objects rather than 700: a poll unpickles
a document's entries from a helper, a thousand objects at once, and a first pass of 1,000
sources made some 300 collections of the youngest objects, 0.16-0.22 s of the poller's time;
with YOUNG, three, 0.015 s. What a collection frees is cycles (everything else goes when its
last reference does), so waiting longer for it keeps little more memory. A helper process, a
test or a library user that never paused is left as it was.
"""

from __future__ import annotations

import gc

_paused = False
YOUNG = 10_000  # new objects between two collections of the youngest (Python's default: 700)


def pause() -> None:
    """Turn the collector off for start-up, if it is on."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Start-up is over: freeze what it made and turn the collector back on (if `pause` turned it
    off; otherwise nothing)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.set_threshold(YOUNG, *gc.get_threshold()[1:])
        gc.enable()
