"""Memory debugging for soaks run by hand: ``B2CRYPTFS_TRACEMALLOC=DIR`` makes the daemon
trace its allocations and dump a tracemalloc snapshot into DIR every
``B2CRYPTFS_TRACEMALLOC_EVERY`` seconds (default 30), for comparing offline::

    a, b = (tracemalloc.Snapshot.load(p) for p in ("snap-0001", "snap-0010"))
    for stat in b.compare_to(a, "traceback")[:20]: print(stat)

Tracing slows the daemon and costs memory of its own: never for normal use.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

ENV_DIR = "B2CRYPTFS_TRACEMALLOC"
ENV_EVERY = "B2CRYPTFS_TRACEMALLOC_EVERY"


def start_from_env() -> None:
    """Start tracing and the dumping thread if the environment asks for it."""
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return
    import tracemalloc  # here: every mount imports this module, few trace (and it costs ms)

    every = float(os.environ.get(ENV_EVERY, "30"))
    os.makedirs(directory, exist_ok=True)
    if not tracemalloc.is_tracing():
        tracemalloc.start(8)
    log.warning("tracemalloc on: snapshots every %g s into %s", every, directory)

    def dump() -> None:
        n = 0
        while True:
            time.sleep(every)
            n += 1
            tracemalloc.take_snapshot().dump(os.path.join(directory, f"snap-{n:04d}"))

    threading.Thread(target=dump, name="tracemalloc-dump", daemon=True).start()
