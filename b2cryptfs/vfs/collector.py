"""Python's cycle collector, kept out of the way of big directory listings and of start-up.

Listing a directory of 2,000 files makes some 100,000 objects in a burst (B2's JSON reply,
then records per object and per file). Allocation at that rate sets the cycle collector off
again and again, up to a full pass over the whole heap: a quarter of the daemon's CPU time in
an ``ls -l`` on a fresh mount (40-70 ms of one full pass alone, measured). Those passes find
nothing: none of it is cyclic garbage (the reply is freed by reference counting as soon as it
is read, the records live as long as the listing). So:

- :func:`collector_paused`: no automatic collection while a listing is built;
- :func:`pause_for_startup`: from the mount command's start until the mount is ready, only
  the young generation is collected. Start-up (imports, the store's client, the keys) makes
  some 50,000 objects that live as long as the daemon; the passes over the older generations
  re-walked them again and again (measured: about 30 of the 40 ms the collector took before
  the root was listed). Young passes stay: they free the cycles imports leave behind (with
  no collection at all the daemon kept 0.7 MB more);
- :func:`freeze_startup_heap`: once the mount is up, what start-up made is left out of every
  later pass; it lives as long as the daemon.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

_lock = threading.Lock()
_running = 0  # blocks in progress, in any thread
_resume = False  # the collector was on when the first of them began
# The thresholds pause_for_startup() replaced (None: no start-up pause).
_startup_thresholds: tuple[int, int, int] | None = None
_NEVER = 1 << 30  # a threshold no start-up reaches


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


def pause_for_startup() -> None:
    """Only young-generation passes until :func:`end_startup_pause` (or
    :func:`freeze_startup_heap`); a second call does nothing. A forked daemon inherits it."""
    global _startup_thresholds
    with _lock:
        if _startup_thresholds is not None:
            return
        _startup_thresholds = gc.get_threshold()
        gc.set_threshold(_startup_thresholds[0], _NEVER, _NEVER)


def end_startup_pause() -> None:
    """The collector's thresholds as before :func:`pause_for_startup` (nothing to do if
    there is no start-up pause)."""
    global _startup_thresholds
    with _lock:
        if _startup_thresholds is None:
            return
        gc.set_threshold(*_startup_thresholds)
        _startup_thresholds = None


def freeze_startup_heap() -> None:
    """Move every object alive now out of the collector's passes (once, when the daemon is
    ready; they are still freed by reference counting), and end the start-up pause."""
    gc.freeze()
    end_startup_pause()
    if log.isEnabledFor(logging.DEBUG):  # the count walks every frozen object
        log.debug(
            "start-up heap frozen: %d objects left out of later collector passes; thresholds %s",
            gc.get_freeze_count(),
            ",".join(map(str, gc.get_threshold())),
        )
