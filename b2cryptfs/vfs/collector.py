"""Python's cycle collector, kept out of the way of big directory listings and of start-up.

Listing a directory of 2,000 files makes some 100,000 objects in a burst (B2's JSON reply,
then records per object and per file). Allocation at that rate sets the cycle collector off
again and again, up to a full pass over the whole heap: a quarter of the daemon's CPU time in
an ``ls -l`` on a fresh mount (40-70 ms of one full pass alone, measured). Those passes find
nothing: none of it is cyclic garbage (the reply is freed by reference counting as soon as it
is read, the records live as long as the listing). A mount's start-up is the same: its
imports, the store's client and the keys make some 50,000 objects that live as long as the
daemon, and the passes over them (about 100 while importing) were a tenth of its CPU time
until the root was listed. So:

- :func:`collector_paused`: no automatic collection while a listing is built;
- :func:`pause_for_startup`: none from the mount command's start until the mount is ready;
- :func:`freeze_startup_heap`: once the mount is up, what start-up made (modules, the
  store's client, the keys) is left out of every later pass; it lives as long as the daemon.
  The little cyclic garbage start-up leaves (import-time helpers, some 0.5 MB) is kept too.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

_lock = threading.Lock()
_running = 0  # blocks in progress, in any thread (the start-up pause counts as one)
_resume = False  # the collector was on when the first of them began
_startup = False  # the start-up pause is on (pause_for_startup, until end_startup_pause)


def _enter() -> None:
    global _running, _resume
    with _lock:
        if _running == 0:
            _resume = gc.isenabled()
            gc.disable()
        _running += 1


def _leave() -> None:
    global _running
    with _lock:
        _running -= 1
        if _running == 0 and _resume:
            gc.enable()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection while the block runs (blocks may nest or run concurrently
    in several threads: the collector resumes when the last one ends, if it was on)."""
    _enter()
    try:
        yield
    finally:
        _leave()


def pause_for_startup() -> None:
    """No automatic collection until :func:`end_startup_pause` (or
    :func:`freeze_startup_heap`); a second call does nothing. A forked daemon inherits it."""
    global _startup
    with _lock:
        if _startup:
            return
        _startup = True
    _enter()


def end_startup_pause() -> None:
    """The collector as it was before :func:`pause_for_startup` (unless a listing's pause
    still runs); does nothing if there is no start-up pause."""
    global _startup
    with _lock:
        if not _startup:
            return
        _startup = False
    _leave()


def freeze_startup_heap() -> None:
    """Move every object alive now out of the collector's passes (once, when the daemon is
    ready; they are still freed by reference counting), and end the start-up pause."""
    gc.freeze()
    end_startup_pause()
    if log.isEnabledFor(logging.DEBUG):  # the count walks every frozen object
        log.debug(
            "start-up heap frozen: %d objects left out of later collector passes; collector %s",
            gc.get_freeze_count(),
            "on" if gc.isenabled() else "off",
        )
