"""Python's cycle collector, kept out of the way of big directory listings.

Listing a directory of 2,000 files makes some 100,000 objects in a burst (B2's JSON reply,
then records per object and per file). Allocation at that rate sets the cycle collector off
again and again, up to a full pass over the whole heap: a quarter of the daemon's CPU time in
an ``ls -l`` on a fresh mount (40-70 ms of one full pass alone, measured). Those passes find
nothing: none of it is cyclic garbage (the reply is freed by reference counting as soon as it
is read, the records live as long as the listing). So:

- :func:`collector_paused`: no automatic collection while a listing is built;
- :func:`freeze_startup_heap`: once the mount is up, what start-up made (modules, the
  store's client, the keys) is left out of every later pass; it lives as long as the daemon.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_running = 0  # blocks in progress, in any thread
_resume = False  # the collector was on when the first of them began


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection while the block runs (blocks may nest or run concurrently
    in several threads: the collector resumes when the last one ends, if it was on)."""
    global _running, _resume
    with _lock:
        if _running == 0:
            _resume = gc.isenabled()
            gc.disable()
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _resume:
                gc.enable()


def freeze_startup_heap() -> None:
    """Move every object alive now out of the collector's passes (once, when the daemon is
    ready; they are still freed by reference counting)."""
    gc.freeze()
